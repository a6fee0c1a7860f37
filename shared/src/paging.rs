//! Paging EC2 listings: the largest page, and the repeated-token check every listing makes; the
//! listing of an account's own images that more than one function reads.

use aws_sdk_ec2::types::{Filter, Image};

use crate::error::AwsError;

/// Page size of EC2 listings: the API's maximum, so a sweep makes the fewest calls.
pub const MAX_RESULTS: i32 = 1000;

/// The error code of a listing that handed back a page token it had answered before: it cannot
/// be complete, and a caller that takes a failed lookup as "unknown" must not take this one so.
pub const REPEATED_NEXT_TOKEN: &str = "RepeatedNextToken";

/// Watches a listing's pages move on. The SDK's paginators stop *quietly* when a page hands back
/// the token it was asked with (`stop_on_duplicate_token`), and a partial listing taken as
/// complete makes referenced snapshots look orphaned; so amiguard turns that off on every
/// paginator and fails the listing here instead, on any token seen before (a cycle too).
#[derive(Debug)]
pub struct PageTokens {
    operation: &'static str,
    seen: std::collections::HashSet<String>,
}

impl PageTokens {
    pub fn new(operation: &'static str) -> Self {
        Self { operation, seen: std::collections::HashSet::new() }
    }

    /// Checks the token a page answered: an error when an earlier page answered it already.
    pub fn check(&mut self, next: Option<&str>) -> Result<(), AwsError> {
        match next {
            Some(token) if !self.seen.insert(token.to_string()) => Err(AwsError::new(
                self.operation,
                REPEATED_NEXT_TOKEN,
                format!("a page answered a token answered before ({token}): the listing cannot be complete"),
            )),
            _ => Ok(()),
        }
    }
}

/// This account's images matching `filters`, every page, disabled and deprecated ones included
/// (an image left out here could have its snapshots deleted), each read by `read` as its page
/// arrives: the SDK's page is dropped before the next one, so only what `read` keeps stays in
/// memory. A failed page fails the listing.
pub async fn describe_own_images<T>(
    client: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
    mut read: impl FnMut(&Image) -> Option<T>,
) -> Result<Vec<T>, AwsError> {
    let mut pages = client
        .describe_images()
        .owners("self")
        .set_filters((!filters.is_empty()).then_some(filters))
        .include_disabled(true)
        .include_deprecated(true)
        .max_results(MAX_RESULTS)
        .into_paginator()
        .stop_on_duplicate_token(false)
        .send();
    let mut tokens = PageTokens::new("DescribeImages");
    let mut images = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("DescribeImages", e))?;
        tokens.check(page.next_token())?;
        images.extend(page.images().iter().filter_map(&mut read));
    }
    Ok(images)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_repeats_fails_the_listing() {
        let mut tokens = PageTokens::new("DescribeSnapshots");
        assert!(tokens.check(Some("a")).is_ok());
        assert!(tokens.check(Some("b")).is_ok());
        let err = tokens.check(Some("b")).unwrap_err();
        assert_eq!((err.operation, err.code.as_str()), ("DescribeSnapshots", "RepeatedNextToken"));
        assert!(tokens.check(Some("a")).is_err(), "a cycle of two pages");
        assert!(tokens.check(None).is_ok(), "the last page");
    }
}
