//! Listing a bucket's keys a page at a time, with common prefixes.

use crate::catalog::Catalog;
use crate::records::ObjectRecord;
use crate::StoreError;

/// What to list.
#[derive(Clone, Copy, Debug)]
pub struct ListQuery<'a> {
    /// Only keys starting with this.
    pub prefix: &'a str,
    /// Keys with this after the prefix are rolled up into one common prefix (empty: none).
    pub delimiter: &'a str,
    /// Start after this key or common prefix.
    pub after: Option<&'a str>,
    /// Most entries (keys and common prefixes) on the page.
    pub max: usize,
}

/// One page of a listing.
pub struct Page {
    /// Objects on the page.
    pub objects: Vec<(String, ObjectRecord)>,
    /// Common prefixes on the page.
    pub prefixes: Vec<String>,
    /// Whether more entries follow.
    pub truncated: bool,
    /// The last key or prefix on the page (where the next page starts after).
    pub last: Option<String>,
}

/// Lists keys of `bucket` under `q.prefix` after `q.after`, rolling keys that contain
/// `q.delimiter` past the prefix into common prefixes; at most `q.max` entries.
pub(crate) fn list_page(
    catalog: &Catalog,
    bucket: &str,
    q: &ListQuery<'_>,
) -> Result<Page, StoreError> {
    let ListQuery {
        prefix,
        delimiter,
        after,
        max,
    } = *q;
    let mut page = Page {
        objects: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        last: None,
    };
    // Resuming after a common prefix skips every key under it.
    let mut last_prefix: Option<String> = after
        .filter(|a| !delimiter.is_empty() && a.ends_with(delimiter))
        .map(String::from);
    let mut count = 0usize;
    for item in catalog.scan_objects(bucket, prefix, after) {
        let (key, rec) = item?;
        if !delimiter.is_empty() {
            if let Some(pos) = key[prefix.len()..].find(delimiter) {
                let cp = &key[..prefix.len() + pos + delimiter.len()];
                if last_prefix.as_deref() == Some(cp) {
                    continue;
                }
                if count == max {
                    page.truncated = true;
                    break;
                }
                page.prefixes.push(cp.to_string());
                page.last = Some(cp.to_string());
                last_prefix = Some(cp.to_string());
                count += 1;
                continue;
            }
        }
        if count == max {
            page.truncated = true;
            break;
        }
        page.last = Some(key.clone());
        page.objects.push((key, rec));
        count += 1;
    }
    Ok(page)
}
