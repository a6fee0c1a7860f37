//! Provenance, read: who made each image whose owner the policy trusts by id, from EC2's lineage
//! (`GetImageAncestry`) and the owners DescribeImages shows of its ancestors; judged by
//! `core::provenance`.

use std::collections::HashMap;

use super::context::or_logged;
use super::context::Context;
use crate::core::judge;
use crate::core::provenance::{self, Lineage};
use crate::core::verdict::{LaunchImage, Problem};
use crate::ports::Ec2;

/// Provenance of the images whose owner the policy trusts by id (`self`, an account id): who
/// made each of their ancestors. Images trusted by alias (`amazon`, `aws-marketplace`,
/// `aws-backup-vault`) are AWS's or verified publishers' and are not traced. Answers the
/// problem of each image whose lineage is not trusted.
pub async fn provenance<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    images: &HashMap<String, LaunchImage>,
) -> HashMap<String, Problem> {
    let (policy, account) = (&ctx.config.policy, ctx.account);
    let traced: Vec<&LaunchImage> = images
        .values()
        .filter(|i| i.owner_alias.is_none())
        .filter(|i| judge::owner_verdict(policy, Some(i), account, ctx.invocation.now).is_trusted())
        .collect();
    let mut lineages: Vec<(&LaunchImage, Lineage)> = Vec::with_capacity(traced.len());
    for image in traced {
        let ancestry = ctx.ports.ec2.image_ancestry(&image.image_id).await.map_err(|e| e.to_string());
        lineages.push((image, Lineage::read(ancestry, image)));
    }
    let owners = ancestor_owners(ctx, &lineages).await;
    let mut problems = HashMap::new();
    for (image, lineage) in lineages {
        let lineage = lineage.with_owners(&owners);
        if let Some(problem) = provenance::judge(policy, &image.image_id, &lineage, account) {
            problems.insert(image.image_id.clone(), problem);
        }
    }
    problems
}

/// The ancestors in this region, as DescribeImages shows them (their owner ids). A lookup that
/// fails leaves those owners unknown (provenance unverifiable): it never keeps the invocation
/// from alerting on what it knows.
async fn ancestor_owners<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    lineages: &[(&LaunchImage, Lineage)],
) -> HashMap<String, LaunchImage> {
    let ask = provenance::ancestors_to_describe(lineages, &ctx.ports.region);
    if ask.is_empty() {
        return HashMap::new();
    }
    let found = or_logged(ctx.ports.ec2.visible_images(&ask).await, "the owners of ancestor images");
    found.into_iter().map(|i| (i.image_id.clone(), i)).collect()
}
