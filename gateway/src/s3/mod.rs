//! The S3 API: one entry point that authenticates, routes and dispatches a request.

pub mod body;
pub mod bucket;
pub mod chunked;
pub mod copy;
pub mod delete;
pub mod digest;
pub mod idle;
pub mod list;
pub mod multipart;
pub mod object;
pub mod router;
pub mod sigv4;
pub mod write;
pub mod xml;

use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use cairn_common::request_id::{self, RequestId};
use http::HeaderMap;

use crate::error::S3Error;
use crate::AppState;
use router::{Endpoint, Query};
use sigv4::Payload;

/// What every handler gets besides the body.
pub struct Ctx {
    /// Shared gateway state.
    pub state: AppState,
    /// Request headers.
    pub headers: HeaderMap,
    /// Decoded query parameters.
    pub query: Query,
    /// How the payload is signed.
    pub payload: Payload,
    /// This request's id.
    pub request_id: String,
}

/// A header's value as text, if present and valid.
pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Ctx {
    /// A request header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }
}

/// Handles one S3 request.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    // Always our own id: one from a client could collide or be chosen to mislead.
    let id = RequestId::generate();
    let request_id = id.to_string();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let is_head = parts.method == http::Method::HEAD;
    // hyper answers an empty body without "100 Continue"; botocore then misreads the next
    // response on that connection. Closing such connections keeps clients in step.
    let expect_without_body = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
    let query = router::parse_query(parts.uri.query());
    // Set by the accept loop; absent (tests, other servers) it is "unknown".
    let peer = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    // At ERROR level so that the span (and its id) is on every line that is logged at all.
    let span =
        tracing::error_span!("s3", request_id = %request_id, method = %parts.method, path = %path);

    let endpoint = router::route(&parts.method, &path, &query, &parts.headers);
    let op = endpoint.as_ref().map(|e| e.name()).unwrap_or("Invalid");
    let result = async {
        let payload = match sigv4::authenticate_in(
            &state.keys,
            &state.region,
            parts.method.as_str(),
            &path_and_query,
            &parts.headers,
        ) {
            Ok(p) => p,
            Err(e) => {
                state
                    .keys
                    .refuse(peer, &path_and_query, &parts.headers, &e)
                    .await;
                return Err(e);
            }
        };
        // Authenticated first: an anonymous request learns nothing, not even what it
        // names.
        let endpoint = endpoint?;
        let ctx = Ctx {
            state: state.clone(),
            headers: parts.headers,
            query,
            payload,
            request_id: request_id.clone(),
        };
        dispatch(ctx, endpoint, body).await
    };
    // Node calls made for this request, and tasks spawned with `request_id::propagate`,
    // carry the id; every line logged meanwhile is in the span.
    let result = request_id::scope(id, tracing::Instrument::instrument(result, span.clone())).await;
    let resp = match result {
        Ok(mut r) => {
            if let Ok(v) = http::HeaderValue::from_str(&request_id) {
                r.headers_mut().insert("x-amz-request-id", v);
            }
            r
        }
        Err(e) => span.in_scope(|| e.to_response(&path, &request_id, is_head)),
    };
    let mut resp = resp;
    if expect_without_body {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let status = resp.status().as_u16().to_string();
    metrics::counter!("cairn_s3_requests_total", "operation" => op, "status" => status.clone())
        .increment(1);
    metrics::histogram!("cairn_s3_request_duration_seconds", "operation" => op)
        .record(started.elapsed().as_secs_f64());
    span.in_scope(|| tracing::info!(operation = op, status = %status, elapsed_ms = started.elapsed().as_millis() as u64, "request"));
    resp
}

async fn dispatch(ctx: Ctx, endpoint: Endpoint, body: Body) -> Result<Response, S3Error> {
    if let Some(bucket) = endpoint.existing_bucket() {
        ctx.state.service.bucket(bucket)?;
    }
    match endpoint {
        Endpoint::ListBuckets => bucket::list_buckets(&ctx).await,
        Endpoint::CreateBucket { bucket } => bucket::create_bucket(&ctx, &bucket, body).await,
        Endpoint::HeadBucket { .. } => bucket::head_bucket(&ctx).await,
        Endpoint::DeleteBucket { bucket } => bucket::delete_bucket(&ctx, &bucket).await,
        Endpoint::GetBucketLocation { .. } => bucket::get_location(&ctx).await,
        Endpoint::GetBucketVersioning { .. } => bucket::get_versioning().await,
        Endpoint::ListObjectsV1 { bucket } => list::list_objects(&ctx, &bucket, false).await,
        Endpoint::ListObjectsV2 { bucket } => list::list_objects(&ctx, &bucket, true).await,
        Endpoint::PutObject { bucket, key } => object::put_object(&ctx, &bucket, &key, body).await,
        Endpoint::GetObject { bucket, key, part } => {
            object::get_object(&ctx, &bucket, &key, part, false).await
        }
        Endpoint::HeadObject { bucket, key, part } => {
            object::get_object(&ctx, &bucket, &key, part, true).await
        }
        Endpoint::DeleteObject { bucket, key } => object::delete_object(&ctx, &bucket, &key).await,
        Endpoint::CopyObject { bucket, key } => copy::copy_object(&ctx, &bucket, &key).await,
        Endpoint::DeleteObjects { bucket } => delete::delete_objects(&ctx, &bucket, body).await,
        Endpoint::CreateMultipartUpload { bucket, key } => {
            multipart::create(&ctx, &bucket, &key).await
        }
        Endpoint::UploadPart {
            bucket,
            key,
            upload,
            part,
        } => {
            let target = multipart::PartTarget::find(&ctx, &bucket, &key, upload, part)?;
            multipart::upload_part(&ctx, target, body).await
        }
        Endpoint::UploadPartCopy {
            bucket,
            key,
            upload,
            part,
        } => {
            let target = multipart::PartTarget::find(&ctx, &bucket, &key, upload, part)?;
            copy::upload_part_copy(&ctx, target).await
        }
        Endpoint::CompleteMultipartUpload {
            bucket,
            key,
            upload,
        } => multipart::complete(&ctx, &bucket, &key, upload, body).await,
        Endpoint::AbortMultipartUpload {
            bucket,
            key,
            upload,
        } => multipart::abort(&ctx, &bucket, &key, upload).await,
        Endpoint::ListParts {
            bucket,
            key,
            upload,
        } => multipart::list_parts(&ctx, &bucket, &key, upload).await,
        Endpoint::ListMultipartUploads { bucket } => multipart::list_uploads(&ctx, &bucket).await,
        Endpoint::Unsupported { what } => Err(S3Error::NotImplemented(what)),
    }
}
