//! The `<Error>` document of every failed request.

use serde::Serialize;

/// The error document. Unlike every other response, its root has no namespace. Of the
/// elements between Message and Resource, each error has the ones S3 sends for it (at
/// most two), the others are `None`.
#[derive(Debug, Serialize)]
#[serde(rename = "Error")]
pub struct ErrorDocument<'a> {
    #[serde(rename = "Code")]
    pub code: &'a str,
    #[serde(rename = "Message")]
    pub message: String,
    /// The region the request should have named.
    #[serde(rename = "Region", skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The `x-amz-*` headers present but not signed, comma-separated.
    #[serde(rename = "HeadersNotSigned", skip_serializing_if = "Option::is_none")]
    pub headers_not_signed: Option<String>,
    /// With `MaxSizeAllowed`: the size of the request's user metadata.
    #[serde(rename = "Size", skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(rename = "MaxSizeAllowed", skip_serializing_if = "Option::is_none")]
    pub max_size_allowed: Option<usize>,
    /// The location constraint refused.
    #[serde(rename = "LocationConstraint", skip_serializing_if = "Option::is_none")]
    pub location_constraint: Option<String>,
    /// With `ArgumentValue`: the query parameter refused.
    #[serde(rename = "ArgumentName", skip_serializing_if = "Option::is_none")]
    pub argument_name: Option<&'static str>,
    #[serde(rename = "ArgumentValue", skip_serializing_if = "Option::is_none")]
    pub argument_value: Option<String>,
    #[serde(rename = "Resource")]
    pub resource: &'a str,
    #[serde(rename = "RequestId")]
    pub request_id: &'a str,
}

impl<'a> ErrorDocument<'a> {
    /// The document with only Code, Message, Resource and RequestId.
    pub fn new(code: &'a str, message: String, resource: &'a str, request_id: &'a str) -> Self {
        ErrorDocument {
            code,
            message,
            region: None,
            headers_not_signed: None,
            size: None,
            max_size_allowed: None,
            location_constraint: None,
            argument_name: None,
            argument_value: None,
            resource,
            request_id,
        }
    }

    /// The elements present between Message and Resource, in document order, as
    /// (tag, text).
    pub fn extra_elements(&self) -> Vec<(&'static str, String)> {
        [
            ("Region", self.region.clone()),
            ("HeadersNotSigned", self.headers_not_signed.clone()),
            ("Size", self.size.map(|n| n.to_string())),
            (
                "MaxSizeAllowed",
                self.max_size_allowed.map(|n| n.to_string()),
            ),
            ("LocationConstraint", self.location_constraint.clone()),
            ("ArgumentName", self.argument_name.map(String::from)),
            ("ArgumentValue", self.argument_value.clone()),
        ]
        .into_iter()
        .filter_map(|(tag, text)| Some((tag, text?)))
        .collect()
    }
}
