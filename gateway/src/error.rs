//! The gateway's one error type and its one mapping to S3 error XML.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::s3::xml;
use cairn_store::StoreError;

/// Every way an S3 request can fail. [`S3Error::into_response`] is the only place that
/// turns one into an S3 code, an HTTP status and an XML body.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("Access Denied.")]
    AccessDenied,
    #[error("Request has expired.")]
    ExpiredPresignedUrl,
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    InvalidAccessKeyId,
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    SignatureDoesNotMatch,
    #[error("The difference between the request time and the current time is too large.")]
    RequestTimeTooSkewed,
    #[error("The authorization header is malformed: {0}")]
    AuthorizationHeaderMalformed(String),
    /// `x-amz-*` headers (named, comma-separated) that the signature does not cover.
    #[error("There were headers present in the request which were not signed")]
    HeadersNotSigned(String),
    /// The `Authorization` header's credential scope names another region.
    #[error("The authorization header is malformed; the region '{got}' is wrong; expecting '{expected}'")]
    WrongRegion { got: String, expected: String },
    /// A presigned URL's `X-Amz-Credential` names another region.
    #[error("Error parsing the X-Amz-Credential parameter; the region '{got}' is wrong; expecting '{expected}'")]
    WrongRegionPresigned { got: String, expected: String },
    #[error("Your metadata headers exceed the maximum allowed metadata size")]
    MetadataTooLarge { size: usize, max: usize },
    #[error("The specified location-constraint is not valid")]
    InvalidLocationConstraint(String),
    #[error("The {0} location constraint is incompatible for the region specific endpoint this request was sent to.")]
    IllegalLocationConstraint(String),
    /// A `versionId` other than `null`: Cairn keeps no versions, so it issued no such id.
    #[error("Invalid version id specified")]
    InvalidVersionId(String),
    /// The bucket has as many multipart uploads open as `--max-uploads-per-bucket` allows.
    #[error("This bucket already has {0} multipart uploads in progress, the most allowed; complete or abort some (ListMultipartUploads lists them) before starting another")]
    TooManyUploads(usize),
    #[error("The specified bucket does not exist")]
    NoSuchBucket,
    #[error("The specified key does not exist.")]
    NoSuchKey,
    #[error("The specified bucket is not valid.")]
    InvalidBucketName,
    #[error("Your previous request to create the named bucket succeeded and you already own it.")]
    BucketAlreadyOwnedByYou,
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("The requested range is not satisfiable")]
    InvalidRange,
    #[error("The Content-MD5 you specified did not match what we received.")]
    BadDigest,
    #[error("The {0} you specified did not match the calculated checksum.")]
    ChecksumMismatch(&'static str),
    #[error("The Content-MD5 you specified was invalid.")]
    InvalidDigest,
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    #[error("Your proposed upload exceeds the maximum allowed object size.")]
    EntityTooLarge,
    #[error("You must provide the Content-Length HTTP header.")]
    MissingContentLength,
    #[error(
        "You did not provide the number of bytes specified by the Content-Length HTTP header."
    )]
    IncompleteBody,
    #[error("Your socket connection to the server was not read from or written to within the timeout period.")]
    RequestTimeout,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("The XML you provided was not well-formed or did not validate against our published schema.")]
    MalformedXml,
    #[error("Your key is too long")]
    KeyTooLong,
    #[error("The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.")]
    NoSuchUpload,
    #[error("One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.")]
    InvalidPart,
    #[error("The list of parts was not in ascending order. The parts list must be specified in order by part number.")]
    InvalidPartOrder,
    #[error("The requested partnumber is not satisfiable")]
    InvalidPartNumber,
    #[error("Your proposed upload is smaller than the minimum allowed object size.")]
    EntityTooSmall,
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error("Not Modified")]
    NotModified,
    #[error("{0} is not implemented")]
    NotImplemented(String),
    #[error("The specified method is not allowed against this resource.")]
    MethodNotAllowed,
    #[error("Please reduce your request rate: {0}")]
    SlowDown(String),
    #[error("Service unavailable: {0}")]
    ServiceUnavailable(String),
    #[error("Not enough free space on the storage nodes: {0}")]
    InsufficientStorage(String),
    #[error("We encountered an internal error. Please try again.")]
    Internal(String),
}

impl S3Error {
    /// The S3 error code and HTTP status.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        use S3Error::*;
        match self {
            AccessDenied | ExpiredPresignedUrl => ("AccessDenied", StatusCode::FORBIDDEN),
            InvalidAccessKeyId => ("InvalidAccessKeyId", StatusCode::FORBIDDEN),
            SignatureDoesNotMatch => ("SignatureDoesNotMatch", StatusCode::FORBIDDEN),
            RequestTimeTooSkewed => ("RequestTimeTooSkewed", StatusCode::FORBIDDEN),
            AuthorizationHeaderMalformed(_) | WrongRegion { .. } => {
                ("AuthorizationHeaderMalformed", StatusCode::BAD_REQUEST)
            }
            HeadersNotSigned(_) => ("AccessDenied", StatusCode::FORBIDDEN),
            WrongRegionPresigned { .. } => {
                ("AuthorizationQueryParametersError", StatusCode::BAD_REQUEST)
            }
            MetadataTooLarge { .. } => ("MetadataTooLarge", StatusCode::BAD_REQUEST),
            InvalidLocationConstraint(_) => ("InvalidLocationConstraint", StatusCode::BAD_REQUEST),
            IllegalLocationConstraint(_) => (
                "IllegalLocationConstraintException",
                StatusCode::BAD_REQUEST,
            ),
            InvalidVersionId(_) => ("InvalidArgument", StatusCode::BAD_REQUEST),
            // Not 503 SlowDown: SDKs retry that a few times at once and then fail anyway,
            // while an upload slot frees only when the client (or expiry) ends an upload.
            // A 400 is not retried, and the message says what to do.
            TooManyUploads(_) => ("InvalidRequest", StatusCode::BAD_REQUEST),
            NoSuchBucket => ("NoSuchBucket", StatusCode::NOT_FOUND),
            NoSuchKey => ("NoSuchKey", StatusCode::NOT_FOUND),
            InvalidBucketName => ("InvalidBucketName", StatusCode::BAD_REQUEST),
            BucketAlreadyOwnedByYou => ("BucketAlreadyOwnedByYou", StatusCode::CONFLICT),
            BucketNotEmpty => ("BucketNotEmpty", StatusCode::CONFLICT),
            InvalidRange => ("InvalidRange", StatusCode::RANGE_NOT_SATISFIABLE),
            BadDigest | ChecksumMismatch(_) => ("BadDigest", StatusCode::BAD_REQUEST),
            InvalidDigest => ("InvalidDigest", StatusCode::BAD_REQUEST),
            ContentSha256Mismatch => ("XAmzContentSHA256Mismatch", StatusCode::BAD_REQUEST),
            EntityTooLarge => ("EntityTooLarge", StatusCode::BAD_REQUEST),
            MissingContentLength => ("MissingContentLength", StatusCode::LENGTH_REQUIRED),
            IncompleteBody => ("IncompleteBody", StatusCode::BAD_REQUEST),
            RequestTimeout => ("RequestTimeout", StatusCode::BAD_REQUEST),
            InvalidArgument(_) => ("InvalidArgument", StatusCode::BAD_REQUEST),
            InvalidRequest(_) => ("InvalidRequest", StatusCode::BAD_REQUEST),
            MalformedXml => ("MalformedXML", StatusCode::BAD_REQUEST),
            KeyTooLong => ("KeyTooLongError", StatusCode::BAD_REQUEST),
            NotImplemented(_) => ("NotImplemented", StatusCode::NOT_IMPLEMENTED),
            NoSuchUpload => ("NoSuchUpload", StatusCode::NOT_FOUND),
            InvalidPart => ("InvalidPart", StatusCode::BAD_REQUEST),
            InvalidPartOrder => ("InvalidPartOrder", StatusCode::BAD_REQUEST),
            InvalidPartNumber => ("InvalidPartNumber", StatusCode::RANGE_NOT_SATISFIABLE),
            EntityTooSmall => ("EntityTooSmall", StatusCode::BAD_REQUEST),
            PreconditionFailed => ("PreconditionFailed", StatusCode::PRECONDITION_FAILED),
            NotModified => ("NotModified", StatusCode::NOT_MODIFIED),
            MethodNotAllowed => ("MethodNotAllowed", StatusCode::METHOD_NOT_ALLOWED),
            SlowDown(_) => ("SlowDown", StatusCode::SERVICE_UNAVAILABLE),
            ServiceUnavailable(_) => ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE),
            InsufficientStorage(_) => ("InsufficientStorage", StatusCode::INSUFFICIENT_STORAGE),
            Internal(_) => ("InternalError", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// Elements S3 adds to this error's XML document beyond Code, Message, Resource and
    /// RequestId.
    pub fn extra_elements(&self) -> Vec<(&'static str, String)> {
        self.error_document("", "").extra_elements()
    }

    /// This error's XML document: Code, Message, the elements S3 adds for this error
    /// (`<Region>`...), Resource and RequestId.
    pub fn error_document<'a>(
        &self,
        resource: &'a str,
        request_id: &'a str,
    ) -> xml::ErrorDocument<'a> {
        use S3Error::*;
        let (code, _) = self.code_and_status();
        let mut doc = xml::ErrorDocument::new(code, self.to_string(), resource, request_id);
        match self {
            HeadersNotSigned(names) => doc.headers_not_signed = Some(names.clone()),
            WrongRegion { expected, .. } | WrongRegionPresigned { expected, .. } => {
                doc.region = Some(expected.clone())
            }
            MetadataTooLarge { size, max } => {
                doc.size = Some(*size);
                doc.max_size_allowed = Some(*max);
            }
            InvalidLocationConstraint(c) | IllegalLocationConstraint(c) => {
                doc.location_constraint = Some(c.clone())
            }
            InvalidVersionId(v) => {
                doc.argument_name = Some("versionId");
                doc.argument_value = Some(v.clone());
            }
            _ => {}
        }
        doc
    }

    /// Renders the error for a request on `resource`.
    pub fn to_response(&self, resource: &str, request_id: &str, head: bool) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            // A dead node or disk fails every request alike: log each kind once per interval.
            cairn_common::log_limited!(warn, key = code; code, error = %self, resource, request_id, "request failed");
        } else {
            tracing::debug!(code, error = %self, resource, request_id, "request refused");
        }
        let body = if head || status == StatusCode::NOT_MODIFIED {
            String::new()
        } else {
            // The tests write every error's document; should one still fail, the status
            // goes out with an empty body.
            xml::document(&self.error_document(resource, request_id)).unwrap_or_else(|e| {
                tracing::error!(error = %e, code, "writing the error document failed");
                String::new()
            })
        };
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        if !head {
            h.insert("content-type", HeaderValue::from_static("application/xml"));
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-amz-request-id", v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<xml::MalformedXml> for S3Error {
    fn from(_: xml::MalformedXml) -> Self {
        S3Error::MalformedXml
    }
}

impl From<StoreError> for S3Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotEnoughNodes(msg) => S3Error::SlowDown(msg),
            StoreError::Unavailable(msg) => S3Error::ServiceUnavailable(msg),
            StoreError::Full(msg) => S3Error::InsufficientStorage(msg),
            StoreError::BodyTooShort => S3Error::IncompleteBody,
            StoreError::BodyTooLong => {
                S3Error::InvalidRequest("request body is longer than its declared length".into())
            }
            StoreError::PreconditionFailed => S3Error::PreconditionFailed,
            StoreError::NoSuchKey => S3Error::NoSuchKey,
            StoreError::NoSuchBucket => S3Error::NoSuchBucket,
            StoreError::BucketNotEmpty => S3Error::BucketNotEmpty,
            StoreError::NoSuchUpload => S3Error::NoSuchUpload,
            StoreError::TooManyUploads(limit) => S3Error::TooManyUploads(limit),
            StoreError::Body(e) => match e.downcast::<S3Error>() {
                Ok(s3) => *s3,
                Err(other) => S3Error::InvalidRequest(format!("request body: {other}")),
            },
            other => S3Error::Internal(other.to_string()),
        }
    }
}
