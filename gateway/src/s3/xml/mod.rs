//! S3 XML documents: every response body and request body is a struct here, written by
//! [`document`] (quick-xml's serde serializer) and read by [`parse`] (its deserializer,
//! after [`request_document`] checks and prepares the text).
//!
//! This module sits below the error type: it reports its own [`MalformedXml`], which
//! `crate::error` turns into the S3 error, and `crate::error` renders its `<Error>`
//! document with [`ErrorDocument`].

mod bucket;
mod error;
mod list;
mod multipart;
mod object;

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use quick_xml::events::Event;
use quick_xml::se::{QuoteLevel, Serializer};
use quick_xml::{Reader, SeError};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use bucket::{
    Bucket, Buckets, CreateBucketConfiguration, ListAllMyBucketsResult, LocationConstraint, Owner,
    VersioningConfiguration,
};
pub use error::ErrorDocument;
pub use list::{CommonPrefix, Contents, ListBucketResult};
pub use multipart::{
    Checksum, CompleteMultipartUpload, CompleteMultipartUploadResult, CompletePart,
    InitiateMultipartUploadResult, ListMultipartUploadsResult, ListPartsResult, Part, Upload,
};
pub use object::{CopyResult, Delete, DeleteOutcome, DeleteResult, ObjectIdentifier};

/// The declaration every response document starts with.
pub const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
/// The S3 namespace, on the root element of every response document but `<Error>`.
pub const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The `xmlns` attribute of a response's root element: always [`NS`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Namespace;

impl Serialize for Namespace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(NS)
    }
}

/// The storage class of every object, part and upload: Cairn has one.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub enum StorageClass {
    #[default]
    #[serde(rename = "STANDARD")]
    Standard,
}

/// A request document that is not well-formed, has a DTD, or does not have the shape
/// of the document expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML request document")]
pub struct MalformedXml;

/// Formats unix milliseconds as S3's ISO-8601 timestamp (`2026-11-27T02:00:00.000Z`).
pub fn iso8601(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `serialize_with` for a timestamp field holding unix milliseconds: [`iso8601`].
fn timestamp<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso8601(*ms))
}

/// `serialize_with` for an ETag field holding the bare hex: S3 sends it in quotes.
fn quoted<S: serde::Serializer>(etag: &str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("\"{etag}\""))
}

/// Writes a response document: the XML declaration, then `doc` as the root element
/// named after its type (its serde name). Text is escaped as `quick_xml::escape::escape`
/// does (`<`, `>`, `&`, `'`, `"`), and an element with no content is written as
/// `<Tag></Tag>`, never `<Tag/>`.
pub fn document<T: Serialize>(doc: &T) -> Result<String, SeError> {
    write_document(None, doc)
}

/// [`document`] with the root element named `root` instead of after `doc`'s type.
pub fn document_with_root<T: Serialize>(root: &str, doc: &T) -> Result<String, SeError> {
    write_document(Some(root), doc)
}

fn write_document<T: Serialize>(root: Option<&str>, doc: &T) -> Result<String, SeError> {
    let mut out = String::from(DECL);
    let mut ser = Serializer::with_root(&mut out, root)?;
    ser.expand_empty_elements(true);
    ser.set_quote_level(QuoteLevel::Full);
    doc.serialize(ser)?;
    Ok(out)
}

/// A 200 response carrying `doc` (see [`document`]).
pub fn response<T: Serialize>(doc: &T) -> Response {
    respond(document(doc))
}

/// A 200 response carrying `doc` under the root element `root`.
pub fn response_with_root<T: Serialize>(root: &str, doc: &T) -> Response {
    respond(document_with_root(root, doc))
}

fn respond(body: Result<String, SeError>) -> Response {
    match body {
        Ok(body) => ([("content-type", "application/xml")], body).into_response(),
        // A document type the serializer refuses is a bug in that type (the tests write
        // every one): answer 500 rather than a partial document.
        Err(e) => {
            tracing::error!(error = %e, "writing a response document failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Parses a request body as the document `T`: UTF-8 text, checked and prepared by
/// [`request_document`], then read by `quick_xml::de` (which does not look at the
/// root element's name).
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, MalformedXml> {
    let text = std::str::from_utf8(raw).map_err(|_| MalformedXml)?;
    let doc = request_document(text)?;
    quick_xml::de::from_str(&doc).map_err(|_| MalformedXml)
}

/// [`parse`], and the root element must be named `root` (any namespace).
pub fn parse_with_root<T: DeserializeOwned>(raw: &[u8], root: &str) -> Result<T, MalformedXml> {
    let text = std::str::from_utf8(raw).map_err(|_| MalformedXml)?;
    let doc = request_document(text)?;
    let mut reader = Reader::from_str(&doc);
    loop {
        match reader.read_event().map_err(|_| MalformedXml)? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == root.as_bytes() => {
                break
            }
            Event::Start(_) | Event::Empty(_) | Event::Eof => return Err(MalformedXml),
            _ => {}
        }
    }
    quick_xml::de::from_str(&doc).map_err(|_| MalformedXml)
}

/// Checks and prepares a request document for `quick_xml::de`:
/// - a DTD is refused (S3 documents have none; and a DOCTYPE between two pieces of text
///   makes quick-xml 0.38's deserializer reach an `unreachable!()`, a panic);
/// - U+0085 and U+2028, which the deserializer reads as line ends by XML 1.1 rules while
///   XML 1.0 keeps them (an object key may hold them), become character references
///   (CDATA sections are split around them), which it keeps as they are.
pub fn request_document(doc: &str) -> Result<Cow<'_, str>, MalformedXml> {
    let rewrite = doc.contains(['\u{85}', '\u{2028}']);
    let mut out = String::with_capacity(if rewrite { doc.len() + 64 } else { 0 });
    let mut reader = Reader::from_str(doc);
    let mut start = 0;
    loop {
        let event = reader.read_event().map_err(|_| MalformedXml)?;
        let end = usize::try_from(reader.buffer_position()).map_err(|_| MalformedXml)?;
        let raw = doc.get(start..end).ok_or(MalformedXml)?;
        start = end;
        match event {
            Event::Eof => break,
            Event::DocType(_) => return Err(MalformedXml),
            _ if !rewrite => {}
            Event::Text(_) => out.push_str(
                &raw.replace('\u{85}', "&#x85;")
                    .replace('\u{2028}', "&#x2028;"),
            ),
            Event::CData(_) => out.push_str(
                &raw.replace('\u{85}', "]]>&#x85;<![CDATA[")
                    .replace('\u{2028}', "]]>&#x2028;<![CDATA["),
            ),
            _ => out.push_str(raw),
        }
    }
    if !rewrite {
        return Ok(Cow::Borrowed(doc));
    }
    out.push_str(doc.get(start..).unwrap_or_default());
    Ok(Cow::Owned(out))
}
