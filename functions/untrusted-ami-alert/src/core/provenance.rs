//! Provenance: who *made* an image, not only who owns it now. `copy-image` of an untrusted
//! public AMI makes an image owned by the account itself, trusted by `self`; so an image whose
//! owner is trusted is judged again by the owners of its ancestors, as EC2 records the lineage
//! (`GetImageAncestry`; `SourceImageId`/`SourceImageRegion` of a copy where the lineage cannot
//! be read), each ancestor's owner read in the ancestor's own region. Pure: the adapter reads the
//! chain, this module judges it.

use std::collections::{BTreeMap, HashMap};

use super::policy::TrustPolicy;
use super::verdict::{LaunchImage, Problem};

/// One ancestor of an image, parent first: what EC2 says of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ancestor {
    pub image_id: String,
    /// The ancestor's region, when EC2 says (a copy across regions).
    pub region: Option<String>,
    /// Its owner's id, when DescribeImages shows it (GetImageAncestry gives only the alias).
    pub owner_id: Option<String>,
    pub owner_alias: Option<String>,
}

/// The lineage EC2 gave for an image: its ancestors, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lineage {
    /// Parent first; empty: EC2 records no ancestor (the image was not copied or built from one).
    Ancestors(Vec<Ancestor>),
    /// The lineage could not be read (the call failed): the reason.
    Unreadable(String),
}

impl Lineage {
    /// The lineage of `image` as `GetImageAncestry` answered (`Err`: why it could not be read). A
    /// copy still names its source on DescribeImages: then that one step can be judged.
    pub fn read(ancestry: Result<Vec<Ancestor>, String>, image: &LaunchImage) -> Self {
        match ancestry {
            Ok(ancestors) => Self::Ancestors(ancestors),
            Err(_) if image.source_image_id.is_some() => Self::Ancestors(vec![Ancestor {
                image_id: image.source_image_id.clone().unwrap_or_default(),
                region: image.source_image_region.clone(),
                ..Ancestor::default()
            }]),
            Err(why) => Self::Unreadable(why),
        }
    }

    /// Names each ancestor's owner as DescribeImages showed it (`owners`, by image id).
    pub fn with_owners(mut self, owners: &HashMap<String, LaunchImage>) -> Self {
        if let Self::Ancestors(ancestors) = &mut self {
            for ancestor in ancestors.iter_mut() {
                if let Some(seen) = owners.get(&ancestor.image_id) {
                    ancestor.owner_id = Some(seen.owner_id.clone()).filter(|o| !o.is_empty());
                    ancestor.owner_alias = ancestor.owner_alias.clone().or_else(|| seen.owner_alias.clone());
                }
            }
        }
        self
    }
}

/// The ancestors in the images' `lineages` whose owner ids DescribeImages shows (GetImageAncestry
/// gives only aliases), by the region each is in (`region`, this one, when EC2 names none), each
/// once: an ancestor is read where it is (a copy's source in its own region), so that an own image
/// copied from another region is judged by its source's owner, not taken for unverifiable.
pub fn ancestors_to_describe(lineages: &[(&LaunchImage, Lineage)], region: &str) -> BTreeMap<String, Vec<String>> {
    let mut ask: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let ancestors = lineages
        .iter()
        .filter_map(|(_, l)| match l {
            Lineage::Ancestors(a) => Some(a),
            Lineage::Unreadable(_) => None,
        })
        .flatten();
    for ancestor in ancestors {
        let place = ancestor.region.as_deref().filter(|r| !r.is_empty()).unwrap_or(region);
        ask.entry(place.to_string()).or_default().push(ancestor.image_id.clone());
    }
    for ids in ask.values_mut() {
        ids.sort();
        ids.dedup();
    }
    ask
}

/// The provenance verdict: nothing when every ancestor's owner is trusted (or there is none).
pub fn judge(policy: &TrustPolicy, image_id: &str, lineage: &Lineage, this_account: &str) -> Option<Problem> {
    let ancestors = match lineage {
        Lineage::Ancestors(ancestors) => ancestors,
        Lineage::Unreadable(why) => {
            return Some(Problem::ProvenanceUnverifiable {
                chain: vec![image_id.to_string()],
                why: format!("its lineage could not be read ({why})"),
            })
        }
    };
    let mut chain = vec![image_id.to_string()];
    for ancestor in ancestors {
        chain.push(ancestor.image_id.clone());
        let alias = ancestor.owner_alias.as_deref();
        let owner = ancestor.owner_id.as_deref().unwrap_or_default();
        if policy.trusts_owner(owner, alias, this_account) {
            continue;
        }
        if ancestor.owner_id.is_none() {
            let place = ancestor.region.as_deref().map(|r| format!(" in {r}")).unwrap_or_default();
            return Some(Problem::ProvenanceUnverifiable {
                chain,
                why: format!("the owner of {}{place} cannot be read", ancestor.image_id),
            });
        }
        return Some(Problem::AncestorNotTrusted {
            chain,
            owner_id: owner.to_string(),
            owner_alias: ancestor.owner_alias.clone(),
        });
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn ancestor(id: &str, owner: Option<&str>, alias: Option<&str>) -> Ancestor {
        Ancestor {
            image_id: id.into(),
            region: Some("us-east-1".into()),
            owner_id: owner.map(str::to_string),
            owner_alias: alias.map(str::to_string),
        }
    }

    #[test]
    fn a_copy_of_an_untrusted_image_is_untrusted_with_its_chain() {
        let policy = TrustPolicy::default(); // amazon, self
        let lineage = Lineage::Ancestors(vec![ancestor("ami-public", Some("111122223333"), None)]);
        let problem = judge(&policy, "ami-copy", &lineage, ACCOUNT).unwrap();
        assert_eq!(
            problem,
            Problem::AncestorNotTrusted {
                chain: vec!["ami-copy".into(), "ami-public".into()],
                owner_id: "111122223333".into(),
                owner_alias: None,
            }
        );
        assert!(problem.to_string().contains("ami-copy <- ami-public"), "{problem}");
    }

    #[test]
    fn trusted_ancestors_or_none_leave_the_image_trusted() {
        let policy = TrustPolicy::default();
        let amazon = Lineage::Ancestors(vec![
            ancestor("ami-golden", Some(ACCOUNT), None),
            ancestor("ami-al2023", None, Some("amazon")),
        ]);
        assert_eq!(judge(&policy, "ami-app", &amazon, ACCOUNT), None);
        assert_eq!(judge(&policy, "ami-app", &Lineage::Ancestors(vec![]), ACCOUNT), None);
    }

    #[test]
    fn an_ancestor_whose_owner_cannot_be_read_or_an_unreadable_lineage_is_unverifiable() {
        let policy = TrustPolicy::default();
        let hidden = Lineage::Ancestors(vec![ancestor("ami-elsewhere", None, None)]);
        let problem = judge(&policy, "ami-copy", &hidden, ACCOUNT).unwrap();
        assert!(matches!(problem, Problem::ProvenanceUnverifiable { .. }), "{problem:?}");
        assert!(problem.to_string().contains("ami-elsewhere in us-east-1"), "{problem}");
        let failed = judge(&policy, "ami-copy", &Lineage::Unreadable("UnauthorizedOperation".into()), ACCOUNT);
        assert!(failed.unwrap().to_string().contains("UnauthorizedOperation"));
        // The first untrusted owner decides, whatever comes after it.
        let deep = Lineage::Ancestors(vec![
            ancestor("ami-mid", Some(ACCOUNT), None),
            ancestor("ami-root", Some("999988887777"), None),
        ]);
        let problem = judge(&policy, "ami-app", &deep, ACCOUNT).unwrap();
        assert!(problem.to_string().contains("ami-app <- ami-mid <- ami-root"), "{problem}");
    }

    #[test]
    fn a_lineage_read_names_what_describe_images_can_tell() {
        let copy = LaunchImage {
            image_id: "ami-copy".into(),
            source_image_id: Some("ami-source".into()),
            source_image_region: Some("eu-west-1".into()),
            ..LaunchImage::default()
        };
        // Unreadable: a copy's own source is its one known ancestor; without one, why.
        let sourced = Lineage::read(Err("denied".into()), &copy);
        let Lineage::Ancestors(ref ancestors) = sourced else { panic!("{sourced:?}") };
        assert_eq!((ancestors[0].image_id.as_str(), ancestors[0].region.as_deref()), ("ami-source", Some("eu-west-1")));
        let plain = LaunchImage { image_id: "ami-own".into(), ..LaunchImage::default() };
        assert_eq!(Lineage::read(Err("denied".into()), &plain), Lineage::Unreadable("denied".into()));
        // Each ancestor is asked for in its own region (this one when EC2 names none), each once.
        let here = Lineage::Ancestors(vec![
            ancestor("ami-b", None, None),
            Ancestor { region: None, ..ancestor("ami-a", None, None) },
            ancestor("ami-b", None, None),
        ]);
        let lineages = [(&copy, sourced), (&plain, here), (&plain, Lineage::Unreadable("denied".into()))];
        let asked = ancestors_to_describe(&lineages, "us-east-1");
        let asked: Vec<(&str, Vec<&str>)> =
            asked.iter().map(|(r, ids)| (r.as_str(), ids.iter().map(String::as_str).collect())).collect();
        assert_eq!(asked, [("eu-west-1", vec!["ami-source"]), ("us-east-1", vec!["ami-a", "ami-b"])]);
        // Owners named from what DescribeImages showed; an alias GetImageAncestry gave is kept.
        let seen = LaunchImage { image_id: "ami-b".into(), owner_id: ACCOUNT.into(), ..LaunchImage::default() };
        let owners = HashMap::from([("ami-b".to_string(), seen)]);
        let named = Lineage::Ancestors(vec![ancestor("ami-b", None, Some("amazon"))]).with_owners(&owners);
        assert_eq!(named, Lineage::Ancestors(vec![ancestor("ami-b", Some(ACCOUNT), Some("amazon"))]));
    }
}
