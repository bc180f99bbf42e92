//! The chat page over HTTP, on servers started in-process without a model (the page and the
//! key checks need none): `/` and its assets with their content types and security headers,
//! `webui: false` turning them into 404s, and the API key still required by the API the page
//! calls. The page in a real browser is `scripts/test-webui.sh`'s job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{Reply, TestServer, send};
use hyper::{Method, StatusCode};
use metallic_serve::{Models, ServerOptions};

const ASSETS: [(&str, &str); 4] = [
    ("/", "text/html; charset=utf-8"),
    ("/webui/app.js", "text/javascript; charset=utf-8"),
    ("/webui/style.css", "text/css; charset=utf-8"),
    ("/webui/icon.svg", "image/svg+xml"),
];

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

/// The directives of a Content-Security-Policy header, each as (name, sources).
fn directives(policy: &str) -> Vec<(String, Vec<String>)> {
    policy
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace().map(str::to_string);
            Some((words.next()?, words.collect()))
        })
        .collect()
}

fn checks_security_headers(reply: &Reply) {
    let policy = header(reply, "content-security-policy");
    let directives = directives(policy);
    let sources = |name: &str| directives.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone());
    assert_eq!(sources("default-src"), Some(vec!["'none'".to_string()]), "{policy}");
    for name in ["script-src", "style-src", "connect-src", "img-src"] {
        assert_eq!(sources(name), Some(vec!["'self'".to_string()]), "{name} in {policy}");
    }
    assert_eq!(sources("frame-ancestors"), Some(vec!["'none'".to_string()]), "{policy}");
    assert_eq!(sources("base-uri"), Some(vec!["'none'".to_string()]), "{policy}");
    assert_eq!(header(reply, "x-content-type-options"), "nosniff");
    assert_eq!(header(reply, "referrer-policy"), "no-referrer");
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_types_and_policy() {
    let server = TestServer::with_models(ServerOptions::default(), Models::default()).await;
    for (path, content_type) in ASSETS {
        let reply = server.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert_eq!(header(&reply, "content-type"), content_type, "{path}");
        assert!(!reply.body.is_empty(), "{path}");
        checks_security_headers(&reply);
    }
    let page = server.get("/").await.text();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains(r#"<script src="/webui/app.js" defer></script>"#), "{page}");
    assert!(page.contains(r#"<link rel="stylesheet" href="/webui/style.css">"#), "{page}");
    // The script reads the conversation as a stream from the API, with the key.
    let script = server.get("/webui/app.js").await.text();
    for needle in ["/v1/chat/completions", "stream: true", "Authorization", "Bearer", "getReader"] {
        assert!(script.contains(needle), "app.js lacks {needle}");
    }
    assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"), "app.js parses HTML");
    // HEAD, as link checkers and some proxies ask.
    let head = send(server.addr, Method::HEAD, "/", &[], None).await;
    assert_eq!((head.status, header(&head, "content-type")), (StatusCode::OK, "text/html; charset=utf-8"));
    // Other paths under /webui/ are unknown routes; other methods are refused.
    server.get("/webui/").await.error(StatusCode::NOT_FOUND);
    server.get("/webui/app.jsx").await.error(StatusCode::NOT_FOUND);
    server.get("/index.html").await.error(StatusCode::NOT_FOUND);
    send(server.addr, Method::POST, "/", &[], Some(b"{}".to_vec())).await.error(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_page_is_served_while_the_models_load() {
    let server = TestServer::loading(ServerOptions::default()).await;
    let reply = server.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    checks_security_headers(&reply);
    // ... and the API it calls says it is loading, which the page shows.
    server.get("/v1/models").await.error(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn without_the_webui_the_page_and_its_assets_are_unknown_routes() {
    let options = ServerOptions { webui: false, ..ServerOptions::default() };
    let server = TestServer::with_models(options, Models::default()).await;
    for (path, _) in ASSETS {
        let reply = server.get(path).await;
        let error = reply.error(StatusCode::NOT_FOUND);
        assert!(error["message"].as_str().unwrap().contains(path), "{error}");
        assert!(reply.headers.get("content-security-policy").is_none(), "{path}");
    }
    // The rest of the server is unchanged.
    assert_eq!(server.get("/health").await.status, StatusCode::OK);
    assert_eq!(server.get("/v1/models").await.status, StatusCode::OK);
}

#[tokio::test]
async fn with_a_key_the_page_is_open_and_the_api_it_calls_is_not() {
    let options = ServerOptions { api_key: Some("sesame".into()), ..ServerOptions::default() };
    let server = TestServer::with_models(options, Models::default()).await;
    for (path, _) in ASSETS {
        assert_eq!(server.get(path).await.status, StatusCode::OK, "{path}");
    }
    // A visit to the page hands out nothing that opens the API: the page's own calls, from
    // the same origin, need the key as anyone's do.
    let page = [("referer", "http://127.0.0.1/"), ("origin", "http://127.0.0.1")];
    let models = send(server.addr, Method::GET, "/v1/models", &page, None).await;
    assert_eq!(models.error(StatusCode::UNAUTHORIZED)["code"], "invalid_api_key");
    let chat = br#"{"messages": [{"role": "user", "content": "Hi"}], "stream": true}"#.to_vec();
    let refused = send(server.addr, Method::POST, "/v1/chat/completions", &page, Some(chat)).await;
    refused.error(StatusCode::UNAUTHORIZED);
    let wrong = [("authorization", "Bearer open")];
    send(server.addr, Method::GET, "/v1/models", &wrong, None).await.error(StatusCode::UNAUTHORIZED);
    let right = [("authorization", "Bearer sesame")];
    assert_eq!(send(server.addr, Method::GET, "/v1/models", &right, None).await.status, StatusCode::OK);
}
