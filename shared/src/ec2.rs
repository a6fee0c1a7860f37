//! EC2 listings more than one function makes, paged and safety-flagged in one place.

use aws_sdk_ec2::types::{Filter, Image};

use crate::error::AwsError;

/// Page size of EC2 listings: the API's maximum, so a sweep makes the fewest calls.
pub const MAX_RESULTS: i32 = 1000;

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
        .send();
    let mut images = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("DescribeImages", e))?;
        images.extend(page.images().iter().filter_map(&mut read));
    }
    Ok(images)
}
