//! S3 access: `s3://BUCKET/PREFIX` URLs and an `aws-sdk-s3` client configured the AWS way.
//!
//! Credentials, region, profile and endpoint come from the usual places
//! (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`,
//! `~/.aws/config`), with `--endpoint-url`, `--region` and `--profile` on top. Addressing is
//! path-style so any self-hosted endpoint (Cairn, MinIO, …) works without DNS tricks.

use std::fmt;
use std::time::Duration;

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use crate::error::{s3_error, Error, Result};

/// A parsed `s3://BUCKET/PREFIX` location. `prefix` is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, empty or ending with `/`.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason| Error::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("must start with s3://"))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(bad("missing bucket name"));
        }
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        {
            return Err(bad(
                "bucket names are 3-63 characters of a-z, 0-9, '-' and '.'",
            ));
        }
        let trimmed = prefix.trim_matches('/');
        if trimmed.split('/').any(|c| c == "." || c == "..") {
            return Err(bad("prefix must not contain '.' or '..' segments"));
        }
        if trimmed.contains("//") {
            return Err(bad("prefix must not contain empty segments"));
        }
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Ok(S3Url {
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// Full key of `rel` under the prefix.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel)
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Connection options shared by every S3 command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct S3Opts {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL or the AWS config).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Region used for signing (default: AWS_REGION, the profile, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config and ~/.aws/credentials.
    #[arg(long)]
    pub profile: Option<String>,
}

/// Builds a client from `opts`, the environment and the AWS config files, failing early
/// and clearly when no credentials can be found.
///
/// Region and credentials come from explicit chains (flag, `AWS_*` environment, profile),
/// not the SDK's default ones: those end by asking the EC2 instance metadata service, a
/// link-local address that does not exist on a home lab and only adds timeouts.
pub async fn connect(opts: &S3Opts) -> Result<Client> {
    // The SDK's hyper client, with TLS (for a gateway behind an HTTPS proxy) from rustls
    // on ring.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let provider_conf = ProviderConfig::default().with_http_client(http.clone());
    let mut profile_region = ProfileFileRegionProvider::builder().configure(&provider_conf);
    let mut profile_creds = ProfileFileCredentialsProvider::builder().configure(&provider_conf);
    if let Some(p) = &opts.profile {
        profile_region = profile_region.profile_name(p);
        profile_creds = profile_creds.profile_name(p);
    }
    let mut region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(profile_region.build())
        .or_else(Region::new("us-east-1"));
    if let Some(r) = &opts.region {
        region = RegionProviderChain::first_try(Region::new(r.clone())).or_else(region);
    }
    let credentials = CredentialsProviderChain::first_try(
        "environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("profile", profile_creds.build());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(region)
        .credentials_provider(credentials);
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(e) = &opts.endpoint_url {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(Error::BadArg(format!(
                "bad --endpoint-url {e:?}: expected http://HOST:PORT or https://HOST"
            )));
        }
        loader = loader.endpoint_url(e);
    }
    let conf = loader.load().await;
    let provider = conf
        .credentials_provider()
        .ok_or_else(|| Error::NoCredentials("no credentials provider".into()))?;
    if let Err(e) = provider.provide_credentials().await {
        return Err(Error::NoCredentials(one_line(
            &DisplayErrorContext(&e).to_string(),
        )));
    }
    let builder = aws_sdk_s3::config::Builder::from(&conf)
        .force_path_style(true)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(120))
                .build(),
        );
    Ok(Client::from_conf(builder.build()))
}

/// Fails with a one-line error when the bucket is missing or not ours.
pub async fn check_bucket(client: &Client, bucket: &str) -> Result<()> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) => match crate::error::http_status(&e) {
            Some(404) => Err(Error::NoSuchBucket(bucket.to_owned())),
            _ => Err(s3_error("HeadBucket", bucket, "", e)),
        },
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = S3Url::parse("s3://ckpts/run1/").unwrap();
        assert_eq!(u.bucket, "ckpts");
        assert_eq!(u.prefix, "run1/");
        assert_eq!(u.key("a/b"), "run1/a/b");
        assert_eq!(S3Url::parse("s3://ckpts").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://ckpts/").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://ckpts/a/b").unwrap().prefix, "a/b/");
        assert_eq!(
            S3Url::parse("s3://ckpts/a/b").unwrap().to_string(),
            "s3://ckpts/a/b/"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "ckpts/run",
            "http://x/y",
            "s3://",
            "s3:///p",
            "s3://A_B/p",
            "s3://b/../x",
            "s3://ab",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
