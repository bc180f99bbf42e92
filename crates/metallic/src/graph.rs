//! `Graph`: a fixed sequence of operations over named tensors, run in one command buffer.

use std::collections::HashMap;

use crate::command::Operation;
use crate::error::{Error, Result};
use crate::kernels::copy::Copy as CopyOp;
use crate::runtime::Runtime;
use crate::tensor::{DType, IntoShape, Tensor};

/// A model runner (the plan's `Model`): named input slots, a list of operations over
/// tensors allocated once, and named outputs. [`forward`](Self::forward) copies the inputs in,
/// runs every operation and copies the outputs out, all in one command buffer.
///
/// ```
/// use metallic::{kernels::elementwise::{Binary, BinaryOp}, DType, Graph, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let mut g = Graph::new(&rt);
/// let x = g.input("x", [4], DType::F32)?;
/// let y = x.empty_like()?;
/// g.push(Binary::scalar(BinaryOp::Mul, &x, 3.0, &y)?)?;
/// g.push(Binary::scalar(BinaryOp::Add, &y, 1.0, &y)?)?;
/// g.output("y", &y)?;
/// let input = Tensor::from_slice(&rt, [4], &[0.0f32, 1.0, 2.0, 3.0])?;
/// let out = g.forward(&[("x", &input)])?;
/// assert_eq!(out["y"].to_vec::<f32>()?, [1.0, 4.0, 7.0, 10.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
pub struct Graph {
    rt: Runtime,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
    ops: Vec<Box<dyn Operation + Send + Sync>>,
}

impl Graph {
    /// An empty graph on `rt`.
    pub fn new(rt: &Runtime) -> Self {
        Graph { rt: rt.clone(), inputs: Vec::new(), outputs: Vec::new(), ops: Vec::new() }
    }

    /// Declares input `name` and returns its slot, for building the operations that read it.
    pub fn input(&mut self, name: &str, shape: impl IntoShape, dtype: DType) -> Result<Tensor> {
        if self.inputs.iter().any(|(n, _)| n == name) {
            return Err(Error::invalid("Graph::input", format!("input {name:?} declared twice")));
        }
        let slot = Tensor::empty(&self.rt, shape, dtype)?;
        self.inputs.push((name.to_string(), slot.clone()));
        Ok(slot)
    }

    /// Appends an operation (validated now, so a graph never holds an invalid op).
    pub fn push(&mut self, op: impl Operation + Send + Sync + 'static) -> Result<()> {
        op.validate()?;
        self.ops.push(Box::new(op));
        Ok(())
    }

    /// Declares `tensor` as output `name`.
    pub fn output(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        if self.outputs.iter().any(|(n, _)| n == name) {
            return Err(Error::invalid("Graph::output", format!("output {name:?} declared twice")));
        }
        if !tensor.runtime().same(&self.rt) {
            return Err(Error::invalid("Graph::output", "tensor belongs to another runtime"));
        }
        self.outputs.push((name.to_string(), tensor.clone()));
        Ok(())
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the graph has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Runs the graph on `inputs` (every declared input, by name, with its shape and dtype)
    /// and returns fresh copies of the outputs. One command buffer, submitted before return.
    pub fn forward(&mut self, inputs: &[(&str, &Tensor)]) -> Result<HashMap<String, Tensor>> {
        let op = "Graph::forward";
        if let Some((name, _)) = inputs.iter().find(|(n, _)| !self.inputs.iter().any(|(m, _)| m == n)) {
            return Err(Error::invalid(op, format!("unknown input {name:?}")));
        }
        let mut cb = self.rt.command_buffer()?;
        for (name, slot) in &self.inputs {
            let mut given = inputs.iter().filter(|(n, _)| n == name);
            let (Some((_, value)), None) = (given.next(), given.next()) else {
                return Err(Error::invalid(op, format!("input {name:?} must be given exactly once")));
            };
            if value.shape() != slot.shape() {
                return Err(Error::mismatch(op, slot.shape(), value.shape()));
            }
            cb.record(&CopyOp::new(value, slot)?)?;
        }
        for node in &self.ops {
            cb.record(node.as_ref())?;
        }
        let mut results = HashMap::with_capacity(self.outputs.len());
        for (name, tensor) in &self.outputs {
            let out = tensor.empty_like()?;
            cb.record(&CopyOp::new(tensor, &out)?)?;
            results.insert(name.clone(), out);
        }
        cb.commit()?;
        Ok(results)
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("inputs", &self.inputs.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("outputs", &self.outputs.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("ops", &self.ops.len())
            .finish()
    }
}
