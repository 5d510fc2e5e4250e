//! S3 XML: response bodies, and the XML 1.0 fix-up of request documents.

use std::borrow::Cow;
use std::fmt::Write;

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::S3Error;

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

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

/// Appends `<tag>escaped text</tag>`.
pub fn elem(out: &mut String, tag: &str, text: &str) {
    let _ = write!(out, "<{tag}>{}</{tag}>", escape(text));
}

/// The `<Error>` document.
pub fn error_body(code: &str, message: &str, resource: &str, request_id: &str) -> String {
    error_body_with(code, message, resource, request_id, &[])
}

/// The `<Error>` document with the error's own extra elements (`<Region>`...).
pub fn error_body_with(
    code: &str,
    message: &str,
    resource: &str,
    request_id: &str,
    extra: &[(&str, String)],
) -> String {
    let mut s = String::from(DECL);
    s.push_str("<Error>");
    elem(&mut s, "Code", code);
    elem(&mut s, "Message", message);
    for (tag, text) in extra {
        elem(&mut s, tag, text);
    }
    elem(&mut s, "Resource", resource);
    elem(&mut s, "RequestId", request_id);
    s.push_str("</Error>");
    s
}

/// A 200 response carrying an XML document.
pub fn response(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([("content-type", "application/xml")], body).into_response()
}

/// Starts a document with the S3 namespace on its root element.
pub fn document(root: &str) -> String {
    format!(r#"{DECL}<{root} xmlns="{NS}">"#)
}

/// `ListAllMyBucketsResult`.
pub fn list_buckets(owner: &str, buckets: &[(String, i64)]) -> String {
    let mut s = document("ListAllMyBucketsResult");
    s.push_str("<Owner>");
    elem(&mut s, "ID", owner);
    elem(&mut s, "DisplayName", owner);
    s.push_str("</Owner><Buckets>");
    for (name, created) in buckets {
        s.push_str("<Bucket>");
        elem(&mut s, "Name", name);
        elem(&mut s, "CreationDate", &iso8601(*created));
        s.push_str("</Bucket>");
    }
    s.push_str("</Buckets></ListAllMyBucketsResult>");
    s
}

/// Checks and prepares a request document for `quick_xml::de`:
/// - a DTD is refused (S3 documents have none; and a DOCTYPE between two pieces of text
///   makes quick-xml 0.38's deserializer reach an `unreachable!()`, a panic);
/// - U+0085 and U+2028, which the deserializer reads as line ends by XML 1.1 rules while
///   XML 1.0 keeps them (an object key may hold them), become character references
///   (CDATA sections are split around them), which it keeps as they are.
pub fn request_document(doc: &str) -> Result<Cow<'_, str>, S3Error> {
    let rewrite = doc.contains(['\u{85}', '\u{2028}']);
    let mut out = String::with_capacity(if rewrite { doc.len() + 64 } else { 0 });
    let mut reader = Reader::from_str(doc);
    let mut start = 0;
    loop {
        let event = reader.read_event().map_err(|_| S3Error::MalformedXml)?;
        let end = usize::try_from(reader.buffer_position()).map_err(|_| S3Error::MalformedXml)?;
        let raw = doc.get(start..end).ok_or(S3Error::MalformedXml)?;
        start = end;
        match event {
            Event::Eof => break,
            Event::DocType(_) => return Err(S3Error::MalformedXml),
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
