//! Errors as OpenAI's clients expect them: a status and
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! Every way a request can fail — a body axum could not read, JSON serde could not parse, a
//! value out of range, a full queue — ends here, so no client ever sees a bare status or a
//! text body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::SubmitError;

/// A failed request: the HTTP status and the OpenAI error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault (`messages[1].content`, `temperature`), if one is.
    pub param: Option<String>,
    /// A machine-readable reason (`context_length_exceeded`, `invalid_api_key`), if there is one.
    pub code: Option<&'static str>,
}

/// The body: `{"error": {...}}`.
#[derive(Serialize)]
struct Body<'a> {
    error: Object<'a>,
}

#[derive(Serialize)]
struct Object<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// An error with `status` and `message`, no param and no code.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), param: None, code: None }
    }

    /// 400: the request is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 about one field of the request.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(message).with_param(param)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 503: loading, or shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500: the server failed (the device, the model's numbers), not the request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The same error naming the field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The same error with a machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// OpenAI's `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON object a stream sends when it fails after its headers went out.
    pub fn to_json(&self) -> serde_json::Value {
        let body = Body {
            error: Object { message: &self.message, kind: self.kind(), param: self.param.as_deref(), code: self.code },
        };
        serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).with_code("queue_full")
            }
            SubmitError::Invalid(message) => Self::invalid(message),
            SubmitError::Stopped => Self::unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_four_fields_openai_clients_read() {
        let e = ApiError::invalid_param("temperature", "temperature must be in [0, 2], got 3");
        assert_eq!(
            e.to_json(),
            serde_json::json!({"error": {
                "message": "temperature must be in [0, 2], got 3",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": null,
            }})
        );
    }

    #[test]
    fn engine_refusals_map_to_their_statuses() {
        let full = ApiError::from(SubmitError::QueueFull { limit: 3 });
        assert_eq!((full.status, full.code), (StatusCode::TOO_MANY_REQUESTS, Some("queue_full")));
        assert!(full.message.contains('3'), "{}", full.message);
        assert_eq!(ApiError::from(SubmitError::Invalid("no".into())).status, StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::from(SubmitError::Stopped).status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_queue_full_answer_says_when_to_retry() {
        let response = ApiError::from(SubmitError::QueueFull { limit: 1 }).into_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).map(HeaderValue::as_bytes), Some(&b"1"[..]));
        let response = ApiError::new(StatusCode::UNAUTHORIZED, "key").into_response();
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
