//! The chat page: `GET /` and its assets under `/webui/`, embedded in the binary.
//!
//! The page is static — HTML, one script, one style sheet and an icon, no build step — and
//! talks to the server only through the public API (`/v1/models`, streamed
//! `/v1/chat/completions`). It holds no data, so it is served without the API key; every
//! call it makes carries the key the user typed (`Authorization: Bearer`), and the API checks
//! it as it checks anyone's. Each asset goes out with a Content-Security-Policy that allows
//! scripts, styles, images and fetches from this origin only, and nothing inline: model output
//! that slipped past the page's renderer still could not run.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy sent with every asset of the page.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Everything the page is made of.
static ASSETS: [Asset; 4] = [
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_str!("index.html") },
    Asset { path: "/webui/app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("app.js") },
    Asset { path: "/webui/style.css", content_type: "text/css; charset=utf-8", body: include_str!("style.css") },
    Asset { path: "/webui/icon.svg", content_type: "image/svg+xml", body: include_str!("icon.svg") },
];

/// The page's routes, for a router of any state (they need none).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| router.route(asset.path, get(move || serve(asset))))
}

async fn serve(asset: &'static Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Small files: revalidated each time, so a new binary's page is never mixed with
            // an old script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> &'static str {
        ASSETS.iter().find(|a| a.path == "/").map(|a| a.body).unwrap_or_default()
    }

    /// The values of `attribute="..."` in `html`.
    fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
        let needle = format!(" {attribute}=\"");
        html.match_indices(&needle)
            .filter_map(|(at, _)| {
                let rest = html.get(at + needle.len()..)?;
                rest.split_once('"').map(|(value, _)| value)
            })
            .collect()
    }

    #[test]
    fn the_page_loads_only_assets_that_are_served() {
        let html = index();
        let mut linked = attribute_values(html, "src");
        linked.extend(attribute_values(html, "href"));
        assert_eq!(linked.len(), 3, "{linked:?}");
        for path in linked {
            assert!(ASSETS.iter().any(|a| a.path == path), "{path} is linked from the page but not served");
        }
    }

    #[test]
    fn the_page_has_nothing_inline_that_the_policy_would_block() {
        let html = index();
        // Every <script> has a src and an empty body; no <style> element, no style="..."
        // attribute, no on*="..." handler.
        for (at, _) in html.match_indices("<script") {
            let tag = html.get(at..).and_then(|rest| rest.split_once("</script>")).map(|(tag, _)| tag);
            let tag = tag.unwrap_or_default();
            assert!(tag.contains(" src=\"/webui/") && tag.ends_with('>'), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "a <style> element");
        assert!(!html.contains(" style=\""), "a style attribute");
        let handlers: Vec<_> = html
            .split(|c: char| c.is_whitespace())
            .filter(|word| word.starts_with("on") && word.contains("=\""))
            .collect();
        assert!(handlers.is_empty(), "inline event handlers: {handlers:?}");
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"), "{CONTENT_SECURITY_POLICY}");
    }
}
