//! Provenance, read: who made each image whose owner the policy trusts by id, from EC2's lineage
//! (`GetImageAncestry`) and the owners DescribeImages shows of its ancestors, each in its own
//! region; judged by `core::provenance`.

use std::collections::HashMap;

use amiguard::error::AwsError;

use super::context::{best_effort, Context};
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
) -> Result<HashMap<String, Problem>, AwsError> {
    let (policy, account) = (&ctx.config.policy, ctx.account);
    let traced: Vec<&LaunchImage> = images
        .values()
        .filter(|i| i.owner_alias.is_none())
        .filter(|i| judge::owner_verdict(policy, Some(i), None, account, ctx.invocation.now).is_trusted())
        .collect();
    let mut lineages: Vec<(&LaunchImage, Lineage)> = Vec::with_capacity(traced.len());
    for image in traced {
        let ancestry = ctx.ports.ec2.image_ancestry(&image.image_id).await.map_err(|e| e.to_string());
        lineages.push((image, Lineage::read(ancestry, image)));
    }
    let owners = ancestor_owners(ctx, &lineages).await?;
    let mut problems = HashMap::new();
    for (image, lineage) in lineages {
        let lineage = lineage.with_owners(&owners);
        if let Some(problem) = provenance::judge(policy, &image.image_id, &lineage, account) {
            problems.insert(image.image_id.clone(), problem);
        }
    }
    Ok(problems)
}

/// The ancestors, as DescribeImages shows them (their owner ids), each read in its own region. A
/// lookup that fails leaves those owners unknown (provenance unverifiable: alerted, not
/// enforced): it never keeps the invocation from alerting on what it knows.
async fn ancestor_owners<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    lineages: &[(&LaunchImage, Lineage)],
) -> Result<HashMap<String, LaunchImage>, AwsError> {
    let mut owners = HashMap::new();
    for (region, ask) in provenance::ancestors_to_describe(lineages, &ctx.ports.region) {
        let found = if region == ctx.ports.region {
            ctx.ports.ec2.visible_images(&ask).await
        } else {
            ctx.ports.ec2.visible_images_in(&region, &ask).await
        };
        let found = best_effort(found, &format!("the owners of ancestor images in {region}"))?;
        owners.extend(found.into_iter().map(|i| (i.image_id.clone(), i)));
    }
    Ok(owners)
}
