//! EC2 listings more than one function makes, paged and safety-flagged in one place.

use aws_sdk_ec2::types::{Filter, Image};

use crate::error::AwsError;

/// Page size of EC2 listings: the API's maximum, so a sweep makes the fewest calls.
pub const MAX_RESULTS: i32 = 1000;

/// This account's images matching `filters`, every page, disabled and deprecated ones included
/// (an image left out here could have its snapshots deleted). A failed page fails the listing.
pub async fn describe_own_images(client: &aws_sdk_ec2::Client, filters: Vec<Filter>) -> Result<Vec<Image>, AwsError> {
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
        images.extend(page.map_err(|e| AwsError::from_sdk("DescribeImages", e))?.images.unwrap_or_default());
    }
    Ok(images)
}
