//! XML request bodies: CompleteMultipartUpload, DeleteObjects and CreateBucket
//! documents as clients write them round-trip; arbitrary, malformed and hostile
//! documents are MalformedXML, never a panic, a stack overflow or a long stall.
//!
//! XML response bodies: each document type is written exactly as S3 clients expect it
//! (declaration, namespace, element order, escaping, absent optional elements).

use std::time::{Duration, Instant};

use cairn_gateway::error::S3Error;
use cairn_gateway::s3::bucket::parse_create_bucket;
use cairn_gateway::s3::delete::{parse_delete, parse_delete_versions};
use cairn_gateway::s3::multipart::parse_complete;
use cairn_gateway::s3::xml::{self, Namespace, StorageClass};
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

fn assert_malformed_or<T>(r: Result<T, S3Error>) -> Option<T> {
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

/// A CompleteMultipartUpload document as SDKs and the CLIs write it: ETags quoted,
/// unquoted or quoted by entity, part checksums by any algorithm.
#[test]
fn complete_documents_as_clients_write_them() {
    let doc = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="{NS}">
  <Part><ETag>"0123456789abcdef0123456789abcdef"</ETag><PartNumber>1</PartNumber><ChecksumCRC32C>yZRlqg==</ChecksumCRC32C></Part>
  <Part><PartNumber>2</PartNumber><ETag>fedcba9876543210fedcba9876543210</ETag></Part>
  <Part><PartNumber>3</PartNumber><ETag>&quot;00000000000000000000000000000000&quot;</ETag><ChecksumSHA256>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</ChecksumSHA256></Part>
</CompleteMultipartUpload>"#
    );
    let parts = parse_complete(doc.as_bytes()).expect("parse");
    let got: Vec<(u32, &str)> = parts.iter().map(|p| (p.number, p.etag.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, "\"0123456789abcdef0123456789abcdef\""),
            (2, "fedcba9876543210fedcba9876543210"),
            (3, "\"00000000000000000000000000000000\""),
        ]
    );
    assert_eq!(parts[0].checksum(Algorithm::Crc32c), Some("yZRlqg=="));
    assert_eq!(parts[0].checksum(Algorithm::Crc32), None);
    assert_eq!(parts[1].checksum(Algorithm::Crc32c), None);
    assert_eq!(
        parts[2].checksum(Algorithm::Sha256),
        Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    );
    // No part at all, and a part without its number, are MalformedXML.
    for bad in [
        "<CompleteMultipartUpload></CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>",
        "<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>",
    ] {
        assert!(parse_complete(bad.as_bytes()).is_err(), "{bad}");
    }
}

/// A DeleteObjects document: Quiet (absent means false), keys with markup escaped, and
/// version ids.
#[test]
fn delete_documents_as_clients_write_them() {
    let doc = format!(
        r#"<Delete xmlns="{NS}"><Quiet>true</Quiet><Object><Key>a&lt;&amp;&quot;&apos;&gt;b</Key></Object><Object><Key>v</Key><VersionId>null</VersionId></Object></Delete>"#
    );
    let (quiet, keys) = parse_delete_versions(doc.as_bytes()).expect("parse");
    assert!(quiet);
    assert_eq!(
        keys,
        [
            ("a<&\"'>b".to_string(), None),
            ("v".to_string(), Some("null".to_string()))
        ]
    );
    let doc = "<Delete><Object><Key>k</Key></Object></Delete>";
    assert_eq!(
        parse_delete(doc.as_bytes()).expect("parse"),
        (false, vec!["k".to_string()])
    );
    let doc = "<Delete><Quiet>false</Quiet><Object><Key>k</Key></Object></Delete>";
    assert!(!parse_delete(doc.as_bytes()).expect("parse").0);
    // U+0085 is kept in a CDATA section too, as XML 1.0 reads it.
    let doc = "<Delete><Object><Key><![CDATA[a\u{85}<b>]]></Key></Object></Delete>";
    assert_eq!(
        parse_delete(doc.as_bytes()).expect("parse").1,
        ["a\u{85}<b>"]
    );
    // No object is MalformedXML.
    assert!(parse_delete(b"<Delete><Quiet>true</Quiet></Delete>").is_err());
}

/// A CreateBucket body: the location constraint trimmed, absent or empty as none; the
/// root must be CreateBucketConfiguration; a DTD is refused.
#[test]
fn create_bucket_documents() {
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateBucketConfiguration xmlns=\"{NS}\">\n  <LocationConstraint> eu-west-1\n</LocationConstraint>\n</CreateBucketConfiguration>"
    );
    assert_eq!(
        parse_create_bucket(doc.as_bytes()).expect("parse"),
        Some("eu-west-1".to_string())
    );
    for none in [
        "<CreateBucketConfiguration/>",
        "<CreateBucketConfiguration></CreateBucketConfiguration>",
        "<CreateBucketConfiguration><LocationConstraint></LocationConstraint></CreateBucketConfiguration>",
        "<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>",
    ] {
        assert_eq!(parse_create_bucket(none.as_bytes()).expect("parse"), None, "{none}");
    }
    for bad in [
        "<Delete><LocationConstraint>eu-west-1</LocationConstraint></Delete>",
        "<!DOCTYPE CreateBucketConfiguration><CreateBucketConfiguration/>",
        "<CreateBucketConfiguration><LocationConstraint>a<!DOCTYPE d>b</LocationConstraint></CreateBucketConfiguration>",
        "",
    ] {
        let err = parse_create_bucket(bad.as_bytes()).expect_err(bad);
        assert_eq!(err.code_and_status().0, "MalformedXML", "{bad}");
    }
}

/// The generic parser reports its own error, which is S3's MalformedXML.
#[test]
fn parse_errors_are_malformed_xml() {
    assert_eq!(
        xml::parse::<xml::Delete>(b"<Delete><Object>").map(|_| ()),
        Err(xml::MalformedXml)
    );
    assert_eq!(
        xml::parse::<xml::Delete>(b"\xff").map(|_| ()),
        Err(xml::MalformedXml)
    );
    assert_eq!(
        S3Error::from(xml::MalformedXml).code_and_status().0,
        "MalformedXML"
    );
    let doc = xml::parse_with_root::<xml::CreateBucketConfiguration>(
        b"<?xml version=\"1.0\"?><!-- c --><CreateBucketConfiguration><LocationConstraint>x</LocationConstraint></CreateBucketConfiguration>",
        "CreateBucketConfiguration",
    )
    .expect("parse");
    assert_eq!(doc.location_constraint.as_deref(), Some("x"));
}

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// `<Root xmlns="...">` after the declaration, as every response but `<Error>` starts.
fn open(root: &str) -> String {
    format!(r#"{DECL}<{root} xmlns="{NS}">"#)
}

fn write<T: serde::Serialize>(doc: &T) -> String {
    xml::document(doc).expect("serialize")
}

/// 2026-11-27T02:00:00.123Z.
const T1: i64 = 1_795_744_800_123;

#[test]
fn list_buckets_document() {
    let doc = xml::ListAllMyBucketsResult {
        xmlns: Namespace,
        owner: xml::Owner::new("AK<&>"),
        buckets: xml::Buckets {
            bucket: vec![
                xml::Bucket {
                    name: "alpha".into(),
                    creation_date: T1,
                },
                xml::Bucket {
                    name: "beta".into(),
                    creation_date: 0,
                },
            ],
        },
    };
    assert_eq!(
        write(&doc),
        open("ListAllMyBucketsResult")
            + "<Owner><ID>AK&lt;&amp;&gt;</ID><DisplayName>AK&lt;&amp;&gt;</DisplayName></Owner>"
            + "<Buckets><Bucket><Name>alpha</Name><CreationDate>2026-11-27T02:00:00.123Z</CreationDate></Bucket>"
            + "<Bucket><Name>beta</Name><CreationDate>1970-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets>"
            + "</ListAllMyBucketsResult>"
    );
    let empty = xml::ListAllMyBucketsResult {
        xmlns: Namespace,
        owner: xml::Owner::new("AK"),
        buckets: xml::Buckets { bucket: vec![] },
    };
    assert_eq!(
        write(&empty),
        open("ListAllMyBucketsResult")
            + "<Owner><ID>AK</ID><DisplayName>AK</DisplayName></Owner><Buckets></Buckets></ListAllMyBucketsResult>"
    );
}

#[test]
fn location_and_versioning_documents() {
    let location = |region: &str| {
        write(&xml::LocationConstraint {
            xmlns: Namespace,
            region: region.into(),
        })
    };
    assert_eq!(
        location(""),
        open("LocationConstraint") + "</LocationConstraint>"
    );
    assert_eq!(
        location("eu-west-1"),
        open("LocationConstraint") + "eu-west-1</LocationConstraint>"
    );
    assert_eq!(
        write(&xml::VersioningConfiguration { xmlns: Namespace }),
        open("VersioningConfiguration") + "</VersioningConfiguration>"
    );
}

fn contents(key: &str, owner: bool) -> xml::Contents {
    xml::Contents {
        key: key.into(),
        last_modified: T1,
        etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
        size: 42,
        owner: owner.then(|| xml::Owner::new("AK")),
        storage_class: StorageClass::Standard,
    }
}

/// ListObjects (V1): Marker always, Delimiter and NextMarker when they apply, Owner in
/// every Contents; markup in keys and prefixes escaped.
#[test]
fn list_objects_v1_document() {
    let doc = xml::ListBucketResult {
        xmlns: Namespace,
        name: "b".into(),
        prefix: "p<&>/".into(),
        delimiter: Some("/".into()),
        max_keys: 2,
        encoding_type: None,
        is_truncated: true,
        key_count: None,
        continuation_token: None,
        start_after: None,
        next_continuation_token: None,
        marker: Some(String::new()),
        next_marker: Some("p<&>/q\"'/".into()),
        contents: vec![contents("p<&>/k\"'", true)],
        common_prefixes: vec![xml::CommonPrefix {
            prefix: "p<&>/q\"'/".into(),
        }],
    };
    assert_eq!(
        write(&doc),
        open("ListBucketResult")
            + "<Name>b</Name><Prefix>p&lt;&amp;&gt;/</Prefix><Delimiter>/</Delimiter>"
            + "<MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated><Marker></Marker>"
            + "<NextMarker>p&lt;&amp;&gt;/q&quot;&apos;/</NextMarker>"
            + "<Contents><Key>p&lt;&amp;&gt;/k&quot;&apos;</Key>"
            + "<LastModified>2026-11-27T02:00:00.123Z</LastModified>"
            + "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>42</Size>"
            + "<Owner><ID>AK</ID><DisplayName>AK</DisplayName></Owner>"
            + "<StorageClass>STANDARD</StorageClass></Contents>"
            + "<CommonPrefixes><Prefix>p&lt;&amp;&gt;/q&quot;&apos;/</Prefix></CommonPrefixes>"
            + "</ListBucketResult>"
    );
}

/// ListObjectsV2: KeyCount, the tokens and StartAfter when they apply, no Owner unless
/// fetched; with encoding-type=url the (already encoded) values pass as they are.
#[test]
fn list_objects_v2_document() {
    let doc = xml::ListBucketResult {
        xmlns: Namespace,
        name: "b".into(),
        prefix: "a%20b%26".into(),
        delimiter: None,
        max_keys: 1000,
        encoding_type: Some("url"),
        is_truncated: true,
        key_count: Some(1),
        continuation_token: Some("YQ".into()),
        start_after: Some("a%3C".into()),
        next_continuation_token: Some("a2V5".into()),
        marker: None,
        next_marker: None,
        contents: vec![contents("a%20b%26%3C%3E", false)],
        common_prefixes: vec![],
    };
    assert_eq!(
        write(&doc),
        open("ListBucketResult")
            + "<Name>b</Name><Prefix>a%20b%26</Prefix><MaxKeys>1000</MaxKeys>"
            + "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
            + "<KeyCount>1</KeyCount><ContinuationToken>YQ</ContinuationToken>"
            + "<StartAfter>a%3C</StartAfter><NextContinuationToken>a2V5</NextContinuationToken>"
            + "<Contents><Key>a%20b%26%3C%3E</Key>"
            + "<LastModified>2026-11-27T02:00:00.123Z</LastModified>"
            + "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>42</Size>"
            + "<StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>"
    );
    // An empty last page: nothing optional.
    let doc = xml::ListBucketResult {
        xmlns: Namespace,
        name: "b".into(),
        prefix: String::new(),
        delimiter: None,
        max_keys: 0,
        encoding_type: None,
        is_truncated: false,
        key_count: Some(0),
        continuation_token: None,
        start_after: None,
        next_continuation_token: None,
        marker: None,
        next_marker: None,
        contents: vec![],
        common_prefixes: vec![],
    };
    assert_eq!(
        write(&doc),
        open("ListBucketResult")
            + "<Name>b</Name><Prefix></Prefix><MaxKeys>0</MaxKeys>"
            + "<IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>"
    );
}

#[test]
fn multipart_documents() {
    assert_eq!(
        write(&xml::InitiateMultipartUploadResult {
            xmlns: Namespace,
            bucket: "b".into(),
            key: "k&<'\">".into(),
            upload_id: "u1".into(),
        }),
        open("InitiateMultipartUploadResult")
            + "<Bucket>b</Bucket><Key>k&amp;&lt;&apos;&quot;&gt;</Key><UploadId>u1</UploadId>"
            + "</InitiateMultipartUploadResult>"
    );
    let complete = |checksum: Option<xml::Checksum>, kind: Option<&str>| {
        write(&xml::CompleteMultipartUploadResult {
            xmlns: Namespace,
            location: "/b/k&".into(),
            bucket: "b".into(),
            key: "k&".into(),
            etag: "abc-2".into(),
            checksum,
            checksum_type: kind.map(String::from),
        })
    };
    let head = open("CompleteMultipartUploadResult")
        + "<Location>/b/k&amp;</Location><Bucket>b</Bucket><Key>k&amp;</Key>"
        + "<ETag>&quot;abc-2&quot;</ETag>";
    assert_eq!(
        complete(None, None),
        head.clone() + "</CompleteMultipartUploadResult>"
    );
    assert_eq!(
        complete(
            Some(xml::Checksum::new(Algorithm::Crc32c, "yZRlqg==-2".into())),
            Some("COMPOSITE")
        ),
        head.clone()
            + "<ChecksumCRC32C>yZRlqg==-2</ChecksumCRC32C><ChecksumType>COMPOSITE</ChecksumType>"
            + "</CompleteMultipartUploadResult>"
    );
    for alg in Algorithm::ALL {
        let name = alg.name();
        assert_eq!(
            complete(Some(xml::Checksum::new(alg, "v".into())), Some("FULL_OBJECT")),
            format!(
                "{head}<Checksum{name}>v</Checksum{name}><ChecksumType>FULL_OBJECT</ChecksumType></CompleteMultipartUploadResult>"
            )
        );
    }
}

#[test]
fn list_parts_document() {
    let part = |n: u32, checksum: Option<&str>| xml::Part {
        part_number: n,
        last_modified: T1,
        etag: "0123".into(),
        size: 5_242_880,
        checksum: checksum.map(|c| xml::Checksum::new(Algorithm::Sha1, c.into())),
    };
    let doc = xml::ListPartsResult {
        xmlns: Namespace,
        bucket: "b".into(),
        key: "k<".into(),
        upload_id: "u".into(),
        part_number_marker: 0,
        next_part_number_marker: Some(2),
        max_parts: 2,
        is_truncated: true,
        storage_class: StorageClass::Standard,
        checksum_algorithm: Some("SHA1"),
        parts: vec![part(1, Some("c1")), part(2, None)],
    };
    assert_eq!(
        write(&doc),
        open("ListPartsResult")
            + "<Bucket>b</Bucket><Key>k&lt;</Key><UploadId>u</UploadId>"
            + "<PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker>"
            + "<MaxParts>2</MaxParts><IsTruncated>true</IsTruncated>"
            + "<StorageClass>STANDARD</StorageClass><ChecksumAlgorithm>SHA1</ChecksumAlgorithm>"
            + "<Part><PartNumber>1</PartNumber><LastModified>2026-11-27T02:00:00.123Z</LastModified>"
            + "<ETag>&quot;0123&quot;</ETag><Size>5242880</Size><ChecksumSHA1>c1</ChecksumSHA1></Part>"
            + "<Part><PartNumber>2</PartNumber><LastModified>2026-11-27T02:00:00.123Z</LastModified>"
            + "<ETag>&quot;0123&quot;</ETag><Size>5242880</Size></Part>"
            + "</ListPartsResult>"
    );
    let empty = xml::ListPartsResult {
        xmlns: Namespace,
        bucket: "b".into(),
        key: "k".into(),
        upload_id: "u".into(),
        part_number_marker: 7,
        next_part_number_marker: None,
        max_parts: 1000,
        is_truncated: false,
        storage_class: StorageClass::Standard,
        checksum_algorithm: None,
        parts: vec![],
    };
    assert_eq!(
        write(&empty),
        open("ListPartsResult")
            + "<Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId>"
            + "<PartNumberMarker>7</PartNumberMarker><MaxParts>1000</MaxParts>"
            + "<IsTruncated>false</IsTruncated><StorageClass>STANDARD</StorageClass>"
            + "</ListPartsResult>"
    );
}

#[test]
fn list_uploads_document() {
    let doc = xml::ListMultipartUploadsResult {
        xmlns: Namespace,
        bucket: "b".into(),
        key_marker: "m&".into(),
        upload_id_marker: String::new(),
        next_key_marker: Some("k'".into()),
        next_upload_id_marker: Some("u2".into()),
        prefix: String::new(),
        max_uploads: 1,
        is_truncated: true,
        uploads: vec![xml::Upload {
            key: "k'".into(),
            upload_id: "u2".into(),
            initiated: T1,
            storage_class: StorageClass::Standard,
        }],
    };
    assert_eq!(
        write(&doc),
        open("ListMultipartUploadsResult")
            + "<Bucket>b</Bucket><KeyMarker>m&amp;</KeyMarker><UploadIdMarker></UploadIdMarker>"
            + "<NextKeyMarker>k&apos;</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>"
            + "<Prefix></Prefix><MaxUploads>1</MaxUploads><IsTruncated>true</IsTruncated>"
            + "<Upload><Key>k&apos;</Key><UploadId>u2</UploadId>"
            + "<Initiated>2026-11-27T02:00:00.123Z</Initiated><StorageClass>STANDARD</StorageClass></Upload>"
            + "</ListMultipartUploadsResult>"
    );
    let empty = xml::ListMultipartUploadsResult {
        xmlns: Namespace,
        bucket: "b".into(),
        key_marker: String::new(),
        upload_id_marker: String::new(),
        next_key_marker: None,
        next_upload_id_marker: None,
        prefix: "p".into(),
        max_uploads: 1000,
        is_truncated: false,
        uploads: vec![],
    };
    assert_eq!(
        write(&empty),
        open("ListMultipartUploadsResult")
            + "<Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>"
            + "<Prefix>p</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>"
            + "</ListMultipartUploadsResult>"
    );
}

#[test]
fn copy_documents() {
    let doc = xml::CopyResult {
        xmlns: Namespace,
        last_modified: T1,
        etag: "e1".into(),
    };
    for root in ["CopyObjectResult", "CopyPartResult"] {
        assert_eq!(
            xml::document_with_root(root, &doc).expect("serialize"),
            format!(
                "{}<LastModified>2026-11-27T02:00:00.123Z</LastModified><ETag>&quot;e1&quot;</ETag></{root}>",
                open(root)
            )
        );
    }
}

/// DeleteResult: Deleted and Error elements in request order; nothing in quiet mode
/// when all went well.
#[test]
fn delete_result_document() {
    let doc = xml::DeleteResult {
        xmlns: Namespace,
        results: vec![
            xml::DeleteOutcome::Deleted { key: "a&".into() },
            xml::DeleteOutcome::Error {
                key: "b<".into(),
                code: "InvalidArgument",
                message: "Invalid version id specified".into(),
            },
            xml::DeleteOutcome::Deleted { key: "c\"".into() },
        ],
    };
    assert_eq!(
        write(&doc),
        open("DeleteResult")
            + "<Deleted><Key>a&amp;</Key></Deleted>"
            + "<Error><Key>b&lt;</Key><Code>InvalidArgument</Code>"
            + "<Message>Invalid version id specified</Message></Error>"
            + "<Deleted><Key>c&quot;</Key></Deleted></DeleteResult>"
    );
    assert_eq!(
        write(&xml::DeleteResult {
            xmlns: Namespace,
            results: vec![],
        }),
        open("DeleteResult") + "</DeleteResult>"
    );
}

/// The Error document: no namespace, the error's own elements between Message and
/// Resource, markup escaped.
#[test]
fn error_documents() {
    let doc = |e: S3Error| write(&e.error_document("/b/k<&>", "RID"));
    let wrap = |code: &str, message: &str, extra: &str| {
        format!(
            "{DECL}<Error><Code>{code}</Code><Message>{message}</Message>{extra}<Resource>/b/k&lt;&amp;&gt;</Resource><RequestId>RID</RequestId></Error>"
        )
    };
    assert_eq!(
        doc(S3Error::NoSuchKey),
        wrap("NoSuchKey", "The specified key does not exist.", "")
    );
    assert_eq!(
        doc(S3Error::HeadersNotSigned("x-amz-a,x-amz-b".into())),
        wrap(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            "<HeadersNotSigned>x-amz-a,x-amz-b</HeadersNotSigned>"
        )
    );
    assert_eq!(
        doc(S3Error::WrongRegion {
            got: "x".into(),
            expected: "eu-west-1".into()
        }),
        wrap(
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed; the region &apos;x&apos; is wrong; expecting &apos;eu-west-1&apos;",
            "<Region>eu-west-1</Region>"
        )
    );
    assert_eq!(
        doc(S3Error::MetadataTooLarge {
            size: 2049,
            max: 2048
        }),
        wrap(
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size",
            "<Size>2049</Size><MaxSizeAllowed>2048</MaxSizeAllowed>"
        )
    );
    assert_eq!(
        doc(S3Error::InvalidLocationConstraint("<x>".into())),
        wrap(
            "InvalidLocationConstraint",
            "The specified location-constraint is not valid",
            "<LocationConstraint>&lt;x&gt;</LocationConstraint>"
        )
    );
    assert_eq!(
        doc(S3Error::IllegalLocationConstraint("eu-west-1".into())),
        wrap(
            "IllegalLocationConstraintException",
            "The eu-west-1 location constraint is incompatible for the region specific endpoint this request was sent to.",
            "<LocationConstraint>eu-west-1</LocationConstraint>"
        )
    );
    assert_eq!(
        doc(S3Error::InvalidVersionId("v&1".into())),
        wrap(
            "InvalidArgument",
            "Invalid version id specified",
            "<ArgumentName>versionId</ArgumentName><ArgumentValue>v&amp;1</ArgumentValue>"
        )
    );
    assert_eq!(
        S3Error::MetadataTooLarge { size: 3, max: 2 }.extra_elements(),
        [
            ("Size", "3".to_string()),
            ("MaxSizeAllowed", "2".to_string())
        ]
    );
}

fn body_of(resp: axum::response::Response) -> (http::StatusCode, Option<String>, String) {
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body =
        futures::executor::block_on(axum::body::to_bytes(resp.into_body(), 1 << 20)).expect("body");
    (
        status,
        ctype,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

/// A document goes out as `application/xml`, and an error's document with its status.
#[test]
fn responses_carry_documents() {
    let (status, ctype, body) = body_of(xml::response(&xml::VersioningConfiguration {
        xmlns: Namespace,
    }));
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(ctype.as_deref(), Some("application/xml"));
    assert_eq!(
        body,
        open("VersioningConfiguration") + "</VersioningConfiguration>"
    );
    let (status, ctype, body) = body_of(S3Error::NoSuchBucket.to_response("/nope", "RID", false));
    assert_eq!(status, http::StatusCode::NOT_FOUND);
    assert_eq!(ctype.as_deref(), Some("application/xml"));
    assert_eq!(
        body,
        format!(
            "{DECL}<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><Resource>/nope</Resource><RequestId>RID</RequestId></Error>"
        )
    );
    // HEAD: no document.
    let (status, _, body) = body_of(S3Error::NoSuchBucket.to_response("/nope", "RID", true));
    assert_eq!((status, body.as_str()), (http::StatusCode::NOT_FOUND, ""));
}

proptest! {
    #![proptest_config(config(256))]

    /// Any key is written escaped exactly as `quick_xml::escape::escape` escapes it, and
    /// the written document reads back to the key.
    #[test]
    fn keys_are_escaped_by_the_serializer(key in prop_oneof![key(), "[<>&'\"a ]{0,12}"]) {
        let doc = write(&xml::DeleteResult {
            xmlns: Namespace,
            results: vec![xml::DeleteOutcome::Deleted { key: key.clone() }],
        });
        let element = format!("<Key>{}</Key>", escape(&key));
        prop_assert!(doc.contains(&element), "{} in {}", element, doc);
        let mut reader = quick_xml::Reader::from_str(&doc);
        let mut text = String::new();
        loop {
            match reader.read_event().expect("read") {
                quick_xml::events::Event::Text(t) => text.push_str(&t.decode().expect("decode")),
                quick_xml::events::Event::GeneralRef(r) => {
                    let name = r.decode().expect("decode");
                    text.push_str(match name.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "apos" => "'",
                        "quot" => "\"",
                        other => panic!("entity {other}"),
                    });
                }
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        prop_assert_eq!(text, key);
    }
}
