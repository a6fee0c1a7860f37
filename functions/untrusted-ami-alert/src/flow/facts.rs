//! Gathering the facts about the instances to judge: their images as EC2 shows them, what EC2
//! recorded at launch for those it does not show, and the images' provenance.

use std::collections::HashMap;

use super::context::{best_effort, Context};
use super::provenance::provenance;
use crate::core::enforce::LaunchedInstance;
use crate::core::verdict::{LaunchImage, Problem};
use crate::error::Error;
use crate::ports::Ec2;

/// What is known of a set of instances' images before any of them is judged.
pub struct Facts {
    /// The images EC2 shows, by id.
    pub images: HashMap<String, LaunchImage>,
    /// By instance id, for the instances whose image EC2 does not show: the image as EC2
    /// recorded it at launch.
    pub launch_metadata: HashMap<String, LaunchImage>,
    /// By image id, for the images whose lineage is not trusted: why.
    pub provenance: HashMap<String, Problem>,
}

/// Reads the images of `instances` once (and what follows from them).
pub async fn gather<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    instances: &[LaunchedInstance],
) -> Result<Facts, Error> {
    let mut image_ids: Vec<String> = instances.iter().filter_map(|i| i.image_id.clone()).collect();
    image_ids.sort();
    image_ids.dedup();
    let images: HashMap<String, LaunchImage> = if image_ids.is_empty() {
        HashMap::new()
    } else {
        ctx.ports.ec2.visible_images(&image_ids).await?.into_iter().map(|i| (i.image_id.clone(), i)).collect()
    };
    let hidden: Vec<String> = instances
        .iter()
        .filter(|i| i.image_id.as_ref().is_some_and(|id| !images.contains_key(id)))
        .map(|i| i.instance_id.clone())
        .collect();
    let launch_metadata = launch_metadata(ctx, &hidden).await?;
    let provenance = if ctx.config.check_provenance { provenance(ctx, &images).await? } else { HashMap::new() };
    Ok(Facts { images, launch_metadata, provenance })
}

/// The owners of images that are no longer visible, as EC2 recorded them at launch. Only
/// detail for the alert (the verdict stays "not visible"), so a failure is logged, not fatal
/// (unless the listing repeated a page token: `best_effort`).
async fn launch_metadata<E: Ec2, P, I, L>(
    ctx: &Context<'_, E, P, I, L>,
    instance_ids: &[String],
) -> Result<HashMap<String, LaunchImage>, Error> {
    if instance_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let found = best_effort(
        ctx.ports.ec2.launch_image_metadata(instance_ids).await,
        "launch metadata (the owners of invisible images)",
    )?;
    Ok(found.into_iter().map(|m| (m.instance_id, m.image)).collect())
}
