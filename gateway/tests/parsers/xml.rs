//! XML request bodies: CompleteMultipartUpload and DeleteObjects documents as clients
//! write them round-trip; arbitrary, malformed and hostile documents are MalformedXML,
//! never a panic, a stack overflow or a long stall.

use std::time::{Duration, Instant};

use cairn_gateway::s3::delete::parse_delete;
use cairn_gateway::s3::multipart::parse_complete;
use cairn_store::checksum::Algorithm;
use proptest::collection::vec;
use proptest::prelude::*;
use quick_xml::escape::escape;

use crate::config;

const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// How a client may lay a document out: declaration, namespace, whitespace, comments
/// and elements the parser does not know.
#[derive(Clone, Debug)]
struct Style {
    decl: bool,
    ns: bool,
    gap: &'static str,
    comment: bool,
    unknown: bool,
    cdata: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::sample::select(vec!["", "\n", "\n  ", "\t", "\r\n "]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(decl, ns, gap, comment, unknown, cdata)| Style {
            decl,
            ns,
            gap,
            comment,
            unknown,
            cdata,
        })
}

impl Style {
    fn open(&self, root: &str) -> String {
        let mut s = String::new();
        if self.decl {
            s.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
            s.push_str(self.gap);
        }
        if self.ns {
            s.push_str(&format!(r#"<{root} xmlns="{NS}">"#));
        } else {
            s.push_str(&format!("<{root}>"));
        }
        s
    }
    fn elem(&self, s: &mut String, tag: &str, text: &str) {
        s.push_str(self.gap);
        if self.cdata && !text.is_empty() {
            let text = text.replace("]]>", "]]]]><![CDATA[>");
            s.push_str(&format!("<{tag}><![CDATA[{text}]]></{tag}>"));
        } else {
            s.push_str(&format!("<{tag}>{}</{tag}>", escape(text)));
        }
        if self.comment {
            s.push_str("<!-- c -->");
        }
        if self.unknown {
            s.push_str("<Extra><Nested a=\"1\">x</Nested></Extra>");
        }
    }
}

/// An object key: any characters XML 1.0 can carry literally, including leading and
/// trailing spaces and the characters XML 1.1 (not 1.0) treats as line ends.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{1,60}",
        " \\PC{0,10}\t ",
        "[ \t]{1,3}",
        "[a-z]{0,3}[\u{85}\u{2028}][a-z]{0,3}",
    ]
}

/// A part as a client lists it.
#[derive(Clone, Debug)]
struct Part {
    number: u32,
    etag: String,
    checksums: Vec<(Algorithm, String)>,
}

fn tag(alg: Algorithm) -> String {
    format!("Checksum{}", alg.name())
}

fn part() -> impl Strategy<Value = Part> {
    (
        any::<u32>(),
        prop_oneof!["\"[0-9a-f]{32}\"", "\\PC{0,40}", key()],
        proptest::sample::subsequence(Algorithm::ALL.to_vec(), 0..=2),
        vec("[A-Za-z0-9+/]{4,44}={0,2}", 2),
    )
        .prop_map(|(number, etag, algs, values)| Part {
            number,
            etag,
            checksums: algs.into_iter().zip(values).collect(),
        })
}

fn complete_doc(parts: &[Part], st: &Style) -> String {
    let mut s = st.open("CompleteMultipartUpload");
    for p in parts {
        s.push_str(st.gap);
        s.push_str("<Part>");
        st.elem(&mut s, "PartNumber", &p.number.to_string());
        st.elem(&mut s, "ETag", &p.etag);
        for (alg, v) in &p.checksums {
            st.elem(&mut s, &tag(*alg), v);
        }
        s.push_str("</Part>");
    }
    s.push_str(st.gap);
    s.push_str("</CompleteMultipartUpload>");
    s
}

fn delete_doc(keys: &[String], quiet: Option<bool>, st: &Style) -> String {
    let mut s = st.open("Delete");
    if let Some(q) = quiet {
        st.elem(&mut s, "Quiet", &q.to_string());
    }
    for k in keys {
        s.push_str(st.gap);
        s.push_str("<Object>");
        st.elem(&mut s, "Key", k);
        s.push_str("</Object>");
    }
    s.push_str("</Delete>");
    s
}

/// Markup soup: tags, entities, CDATA, declarations and text in any order.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("<CompleteMultipartUpload>".to_string()),
        Just("</CompleteMultipartUpload>".to_string()),
        Just("<Delete>".to_string()),
        Just("</Delete>".to_string()),
        Just("<Part>".to_string()),
        Just("</Part>".to_string()),
        Just("<Object>".to_string()),
        Just("</Object>".to_string()),
        Just("<PartNumber>".to_string()),
        Just("</PartNumber>".to_string()),
        Just("<ETag>".to_string()),
        Just("</ETag>".to_string()),
        Just("<Key>".to_string()),
        Just("</Key>".to_string()),
        Just("<Quiet>".to_string()),
        Just("</Quiet>".to_string()),
        Just("<ChecksumCRC32>".to_string()),
        Just("<Key/>".to_string()),
        Just("<![CDATA[x]]>".to_string()),
        Just("&amp;".to_string()),
        Just("&#0;".to_string()),
        Just("&#x110000;".to_string()),
        Just("&unknown;".to_string()),
        Just("<!DOCTYPE d [<!ENTITY e \"eeee\">]>".to_string()),
        Just("&e;".to_string()),
        Just("\u{2028}".to_string()),
        Just("\u{85}".to_string()),
        Just("<![CDATA[\u{2028}]]>".to_string()),
        Just("<!-- \u{85} -->".to_string()),
        Just("<a b=\"\u{2028}\">".to_string()),
        Just("<?xml version=\"1.0\"?>".to_string()),
        Just(" xmlns=\"x\"".to_string()),
        Just("<".to_string()),
        Just(">".to_string()),
        Just("/".to_string()),
        Just("1".to_string()),
        Just("4294967296".to_string()),
        Just("true".to_string()),
        "[ -~]{0,8}",
        "\\PC{0,4}",
    ];
    vec(token, 0..40).prop_map(|t| t.concat().into_bytes())
}

fn assert_malformed_or<T>(r: Result<T, cairn_gateway::error::S3Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert_eq!(e.code_and_status().0, "MalformedXML");
            None
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A CompleteMultipartUpload document as any client lays it out parses to the
    /// parts it lists: numbers, ETags and checksums, in order.
    #[test]
    fn complete_documents_round_trip(parts in vec(part(), 1..12), st in style()) {
        let doc = complete_doc(&parts, &st);
        let got = parse_complete(doc.as_bytes()).expect("parse");
        prop_assert_eq!(got.len(), parts.len());
        for (g, p) in got.iter().zip(&parts) {
            prop_assert_eq!(g.number, p.number);
            prop_assert_eq!(&g.etag, &p.etag);
            for alg in Algorithm::ALL {
                let want = p.checksums.iter().find(|(a, _)| *a == alg).map(|(_, v)| v.as_str());
                prop_assert_eq!(g.checksum(alg), want);
            }
        }
    }

    /// A DeleteObjects document with any keys parses to those keys and the quiet flag.
    #[test]
    fn delete_documents_round_trip(keys in vec(key(), 1..20), quiet in proptest::option::of(any::<bool>()), st in style()) {
        let doc = delete_doc(&keys, quiet, &st);
        let (q, got) = parse_delete(doc.as_bytes()).expect("parse");
        prop_assert_eq!(q, quiet.unwrap_or(false));
        prop_assert_eq!(got, keys);
    }

    /// Arbitrary bytes and markup soup: parsed or MalformedXML, never a panic.
    #[test]
    fn arbitrary_documents_never_panic(doc in prop_oneof![vec(any::<u8>(), 0..500), soup()]) {
        if let Some(parts) = assert_malformed_or(parse_complete(&doc)) {
            prop_assert!(!parts.is_empty());
        }
        if let Some((_, keys)) = assert_malformed_or(parse_delete(&doc)) {
            prop_assert!(!keys.is_empty() && keys.len() <= 1000);
        }
    }

    /// Valid documents with one byte changed: parsed or MalformedXML, never a panic.
    #[test]
    fn mutated_documents_never_panic(parts in vec(part(), 1..4), keys in vec(key(), 1..4), st in style(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        for doc in [complete_doc(&parts, &st), delete_doc(&keys, Some(true), &st)] {
            let mut doc = doc.into_bytes();
            let i = pos.index(doc.len());
            doc[i] = byte;
            assert_malformed_or(parse_complete(&doc));
            assert_malformed_or(parse_delete(&doc));
        }
    }
}

/// Parses `doc` with both parsers on a thread with a tokio worker's default stack
/// (2 MiB), within `limit`.
fn parse_both_bounded(doc: String, limit: Duration) {
    let started = Instant::now();
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            assert_malformed_or(parse_complete(doc.as_bytes()));
            assert_malformed_or(parse_delete(doc.as_bytes()));
        })
        .expect("spawn")
        .join()
        .expect("parser thread");
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
}

/// Deep nesting up to the body limits (4 MiB Complete, 2 MiB Delete) neither overflows
/// the stack nor stalls.
#[test]
fn deeply_nested_documents_are_bounded() {
    let depth = 2 * 1024 * 1024 / 8;
    for wrap in [
        ("<Delete>", "</Delete>"),
        ("<Delete><Object><Key>", "</Key></Object></Delete>"),
        (
            "<CompleteMultipartUpload><Part>",
            "</Part></CompleteMultipartUpload>",
        ),
        ("", ""),
    ] {
        let mut doc = String::from(wrap.0);
        doc.push_str(&"<a>".repeat(depth));
        doc.push_str(&"</a>".repeat(depth));
        doc.push_str(wrap.1);
        parse_both_bounded(doc, Duration::from_secs(10));
        // Unclosed.
        let mut doc = String::from(wrap.0);
        doc.push_str(&"<a>".repeat(depth));
        parse_both_bounded(doc, Duration::from_secs(10));
    }
}

/// Many parts or keys at the body limit parse in bounded time; more than 1000 keys is
/// MalformedXML.
#[test]
fn large_documents_are_bounded() {
    let parts: Vec<Part> = (1..=10_000)
        .map(|n| Part {
            number: n,
            etag: format!("\"{:032x}\"", n),
            checksums: vec![],
        })
        .collect();
    let st = Style {
        decl: true,
        ns: true,
        gap: "\n",
        comment: false,
        unknown: false,
        cdata: false,
    };
    let started = Instant::now();
    assert_eq!(
        parse_complete(complete_doc(&parts, &st).as_bytes())
            .expect("parse")
            .len(),
        10_000
    );
    let keys: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    assert!(parse_delete(delete_doc(&keys, None, &st).as_bytes()).is_err());
    assert_eq!(
        parse_delete(delete_doc(&keys[..1000], None, &st).as_bytes())
            .expect("parse")
            .1
            .len(),
        1000
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Regression: keys are taken exactly as written. The serde deserializer trimmed
/// leading and trailing whitespace and turned U+0085 and U+2028 into `\n` (XML 1.1
/// line ends), so DeleteObjects removed a different key than the one asked for.
#[test]
fn keys_keep_whitespace_and_unicode_line_separators() {
    for key in [
        " lead",
        "trail ",
        "\tboth\t",
        "   ",
        "a\u{2028}b",
        "a\u{85}b",
        "x\r\u{85}",
    ] {
        let doc = format!(
            "<Delete><Object><Key>{}</Key></Object></Delete>",
            escape(key)
        );
        let want = key.replace("\r\u{85}", "\n\u{85}");
        assert_eq!(
            parse_delete(doc.as_bytes()).expect("parse").1,
            vec![want],
            "{key:?}"
        );
    }
    // XML 1.0 line ends are still normalized, and character references are kept.
    let doc = "<Delete><Object><Key>a\r\nb\rc&#13;&#x2028;</Key></Object></Delete>";
    assert_eq!(
        parse_delete(doc.as_bytes()).expect("parse").1,
        vec!["a\nb\nc\r\u{2028}"]
    );
}

/// Regression: a DOCTYPE between two pieces of text made quick-xml's deserializer panic
/// (`unreachable!()` in `read_text`); documents with a DTD are MalformedXML.
#[test]
fn doctypes_are_refused() {
    for doc in [
        "<<CompleteMultipartUpload><Quiet>><!DOCTYPE d [<!ENTITY e \"eeee\">]><![CDATA[x]]>",
        "<Delete><Quiet>t<!DOCTYPE d>rue</Quiet><Object><Key>k</Key></Object></Delete>",
        "<CompleteMultipartUpload><Part><ETag>a<!doctype d>b</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
        "<!DOCTYPE Delete><Delete><Object><Key>k</Key></Object></Delete>",
    ] {
        assert!(parse_complete(doc.as_bytes()).is_err(), "{doc}");
        assert!(parse_delete(doc.as_bytes()).is_err(), "{doc}");
    }
}
