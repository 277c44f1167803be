//! Media lookup, download (bearer, expiry, injected failures), upload and delete.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

async fn register(t: &TestMock, body: Value) -> String {
    let (status, media) = t.post("/_mock/media", body).await;
    assert_eq!(status, 201, "{media}");
    media["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn media_lookup_returns_metas_shape_and_the_download_needs_the_bearer_token() {
    let t = TestMock::start().await;
    let id = register(&t, json!({})).await;

    let (status, lookup) = t.get(&format!("/v24.0/{id}")).await;
    assert_eq!(status, 200, "{lookup}");
    assert_eq!(lookup["messaging_product"], "whatsapp");
    assert_eq!(lookup["id"], id.as_str());
    assert_eq!(lookup["mime_type"], "image/png");
    assert!(lookup["file_size"].as_u64() > Some(0));
    assert_eq!(lookup["sha256"].as_str().map(str::len), Some(64));
    let url = lookup["url"].as_str().expect("url").to_owned();
    assert!(
        url.starts_with(&format!("{}/_media/{id}?", t.mock.base_url())),
        "{url}"
    );

    let without = t.http.get(&url).send().await.expect("sent");
    assert_eq!(without.status().as_u16(), 401);
    let with = t
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(with.status().as_u16(), 200);
    assert_eq!(with.headers()["content-type"], "image/png");
    assert_eq!(
        with.bytes().await.expect("bytes").len() as u64,
        lookup["file_size"].as_u64().expect("size")
    );
}

#[tokio::test]
async fn media_lookup_needs_the_bearer_token_too() {
    let t = TestMock::start().await;
    let id = register(&t, json!({})).await;

    let got = into_json(
        t.http
            .get(t.url(&format!("/v24.0/{id}")))
            .send()
            .await
            .expect("sent"),
    )
    .await;

    assert_meta_error(&got, 401, 190);
}

#[tokio::test]
async fn a_media_url_expires_after_its_lifetime() {
    let t = TestMock::with(|c| c.media_url_ttl = Duration::from_millis(200)).await;
    let id = register(&t, json!({})).await;
    let (_, lookup) = t.get(&format!("/v24.0/{id}")).await;
    let url = lookup["url"].as_str().expect("url").to_owned();

    tokio::time::sleep(Duration::from_millis(250)).await;
    let expired = t
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    let (_, fresh) = t.get(&format!("/v24.0/{id}")).await;
    let renewed = t
        .http
        .get(fresh["url"].as_str().expect("url"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");

    assert_eq!(expired.status().as_u16(), 404);
    assert_eq!(renewed.status().as_u16(), 200);
}

#[tokio::test]
async fn fail_first_media_fails_its_first_download_then_succeeds() {
    let t = TestMock::start().await;
    let id = register(&t, json!({"fail_first": 1})).await;
    let (_, lookup) = t.get(&format!("/v24.0/{id}")).await;
    let url = lookup["url"].as_str().expect("url").to_owned();

    let first = t
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    let second = t
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");

    assert_eq!(first.status().as_u16(), 404);
    assert_eq!(second.status().as_u16(), 200);
}

#[tokio::test]
async fn an_unknown_media_id_is_404_with_code_100() {
    let t = TestMock::start().await;

    let got = t.get("/v24.0/1234567890123456").await;

    assert_meta_error(&got, 404, 100);
}

fn multipart_body(boundary: &str, mime: &str, data: &[u8], product: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(product) = product {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\n{product}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n{mime}\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"invoice.pdf\"\r\nContent-Type: {mime}\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

async fn upload(t: &TestMock, body: Vec<u8>, boundary: &str) -> (u16, Value) {
    into_json(
        t.http
            .post(t.url(&format!("/v24.0/{PNID}/media")))
            .bearer_auth(TOKEN)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

#[tokio::test]
async fn a_multipart_upload_returns_an_id_whose_media_downloads_byte_for_byte() {
    let t = TestMock::start().await;
    let pdf = b"%PDF-1.4\n% Invoice INV2026-0142\n%%EOF\n".to_vec();

    let (status, body) = upload(
        &t,
        multipart_body("b0undary", "application/pdf", &pdf, Some("whatsapp")),
        "b0undary",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let (_, lookup) = t.get(&format!("/v24.0/{id}")).await;
    let downloaded = t
        .http
        .get(lookup["url"].as_str().expect("url"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");

    assert_eq!(lookup["mime_type"], "application/pdf");
    assert_eq!(
        downloaded.bytes().await.expect("bytes").as_ref(),
        pdf.as_slice()
    );
    assert_eq!(t.stats().await["media_uploads"], 1);
}

#[tokio::test]
async fn uploads_without_messaging_product_or_with_an_unsupported_type_are_refused() {
    let t = TestMock::start().await;

    let no_product = upload(
        &t,
        multipart_body("xx", "application/pdf", b"%PDF", None),
        "xx",
    )
    .await;
    let wrong_type = upload(
        &t,
        multipart_body("xx", "application/x-msdownload", b"MZ", Some("whatsapp")),
        "xx",
    )
    .await;

    assert_meta_error(&no_product, 400, 100);
    assert_meta_error(&wrong_type, 400, 131_053);
}

#[tokio::test]
async fn deleted_media_is_gone() {
    let t = TestMock::start().await;
    let id = register(&t, json!({})).await;

    let deleted = t
        .http
        .delete(t.url(&format!("/v24.0/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    let lookup = t.get(&format!("/v24.0/{id}")).await;

    assert_eq!(deleted.status().as_u16(), 200);
    assert_meta_error(&lookup, 404, 100);
}
