//! "Relaunch with the same configuration": turn the launch data EC2 reports for an instance
//! (`GetLaunchTemplateData`) into a launch-template version that launches a copy of it from the
//! new AMI, while the source instance may still exist.
//!
//! Kept: instance type, key pair, IAM instance profile, subnet and security groups (on the
//! network interfaces, or as group ids), public-IP association, placement (zone, tenancy,
//! placement group), monitoring, EBS optimisation, termination/stop protection, shutdown
//! behaviour, user data, CPU options, credit specification, capacity-reservation preference,
//! metadata options (IMDSv2), hibernation, enclave, maintenance and private-DNS options, and
//! the instance's and volumes' tags (not `aws:*`, not `amiguard:*`).
//! Dropped: fixed private IPs and IPv6 addresses, network interface ids (they belong to the
//! source, which may still exist: a relaunch with them would fail), host ids and dedicated-host
//! affinity, block-device mappings, kernel and ramdisk (the AMI carries the volumes, their
//! snapshots, sizes and types), Spot market options, elastic GPU/inference accelerators
//! (retired services) and instance requirements (the type is fixed).

use amiguard::tags;
use aws_sdk_ec2::types::{
    CreditSpecificationRequest, LaunchTemplateCapacityReservationSpecificationRequest, LaunchTemplateCpuOptionsRequest,
    LaunchTemplateEnclaveOptionsRequest, LaunchTemplateHibernationOptionsRequest,
    LaunchTemplateIamInstanceProfileSpecificationRequest, LaunchTemplateInstanceMaintenanceOptionsRequest,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateInstanceNetworkInterfaceSpecification,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, LaunchTemplatePlacementRequest,
    LaunchTemplatePrivateDnsNameOptionsRequest, LaunchTemplateTagSpecification, LaunchTemplateTagSpecificationRequest,
    LaunchTemplatesMonitoringRequest, RequestLaunchTemplateData, ResponseLaunchTemplateData,
};

/// The launch data of a relaunch of the instance described by `source`, from `image_id`.
pub fn relaunch_data(source: &ResponseLaunchTemplateData, image_id: &str) -> RequestLaunchTemplateData {
    let network_interfaces: Vec<_> = source.network_interfaces().iter().map(clean_network_interface).collect();
    // Security groups go on the interfaces when there are any: EC2 refuses both at once.
    let security_group_ids = if network_interfaces.is_empty() {
        source.security_group_ids().iter().filter_map(|g| security_group_id(g)).collect()
    } else {
        Vec::new()
    };
    RequestLaunchTemplateData::builder()
        .image_id(image_id)
        .set_instance_type(source.instance_type().cloned())
        .set_key_name(source.key_name().map(str::to_string))
        .set_iam_instance_profile(source.iam_instance_profile().map(|p| {
            // EC2 wants one of the two: the ARN names the profile unambiguously.
            match p.arn() {
                Some(arn) => LaunchTemplateIamInstanceProfileSpecificationRequest::builder().arn(arn).build(),
                None => LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .set_name(p.name().map(str::to_string))
                    .build(),
            }
        }))
        .set_network_interfaces(non_empty(network_interfaces))
        .set_security_group_ids(non_empty(security_group_ids))
        .set_placement(source.placement().map(|p| {
            LaunchTemplatePlacementRequest::builder()
                .set_availability_zone(p.availability_zone().map(str::to_string))
                .set_tenancy(p.tenancy().cloned())
                .set_group_name(p.group_name().filter(|g| !g.is_empty()).map(str::to_string))
                .set_partition_number(p.partition_number())
                .build()
        }))
        .set_monitoring(
            source.monitoring().map(|m| LaunchTemplatesMonitoringRequest::builder().set_enabled(m.enabled()).build()),
        )
        .set_ebs_optimized(source.ebs_optimized())
        .set_disable_api_termination(source.disable_api_termination())
        .set_disable_api_stop(source.disable_api_stop())
        .set_instance_initiated_shutdown_behavior(source.instance_initiated_shutdown_behavior().cloned())
        .set_user_data(source.user_data().filter(|u| !u.is_empty()).map(str::to_string))
        .set_cpu_options(source.cpu_options().map(|c| {
            LaunchTemplateCpuOptionsRequest::builder()
                .set_core_count(c.core_count())
                .set_threads_per_core(c.threads_per_core())
                .set_amd_sev_snp(c.amd_sev_snp().cloned())
                .build()
        }))
        .set_credit_specification(
            source
                .credit_specification()
                .and_then(|c| c.cpu_credits())
                .map(|credits| CreditSpecificationRequest::builder().cpu_credits(credits).build()),
        )
        .set_capacity_reservation_specification(source.capacity_reservation_specification().and_then(|c| {
            c.capacity_reservation_preference().map(|preference| {
                LaunchTemplateCapacityReservationSpecificationRequest::builder()
                    .capacity_reservation_preference(preference.clone())
                    .build()
            })
        }))
        .set_metadata_options(source.metadata_options().map(|m| {
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .set_http_tokens(m.http_tokens().cloned())
                .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
                .set_http_endpoint(m.http_endpoint().cloned())
                .set_http_protocol_ipv6(m.http_protocol_ipv6().cloned())
                .set_instance_metadata_tags(m.instance_metadata_tags().cloned())
                .build()
        }))
        .set_hibernation_options(
            source
                .hibernation_options()
                .map(|h| LaunchTemplateHibernationOptionsRequest::builder().set_configured(h.configured()).build()),
        )
        .set_enclave_options(
            source
                .enclave_options()
                .map(|e| LaunchTemplateEnclaveOptionsRequest::builder().set_enabled(e.enabled()).build()),
        )
        .set_maintenance_options(source.maintenance_options().map(|m| {
            LaunchTemplateInstanceMaintenanceOptionsRequest::builder()
                .set_auto_recovery(m.auto_recovery().cloned())
                .build()
        }))
        .set_private_dns_name_options(source.private_dns_name_options().map(|p| {
            LaunchTemplatePrivateDnsNameOptionsRequest::builder()
                .set_hostname_type(p.hostname_type().cloned())
                .set_enable_resource_name_dns_a_record(p.enable_resource_name_dns_a_record())
                .set_enable_resource_name_dns_aaaa_record(p.enable_resource_name_dns_aaaa_record())
                .build()
        }))
        .set_tag_specifications(non_empty(
            source.tag_specifications().iter().filter_map(clean_tag_specification).collect(),
        ))
        .build()
}

fn clean_network_interface(
    source: &LaunchTemplateInstanceNetworkInterfaceSpecification,
) -> LaunchTemplateInstanceNetworkInterfaceSpecificationRequest {
    let groups: Vec<String> = source.groups().iter().filter_map(|g| security_group_id(g)).collect();
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
        .set_device_index(source.device_index())
        .set_network_card_index(source.network_card_index())
        .set_subnet_id(source.subnet_id().map(str::to_string))
        .set_groups(non_empty(groups))
        .set_associate_public_ip_address(source.associate_public_ip_address())
        // A relaunched copy should clean up its own interface.
        .delete_on_termination(true)
        .set_description(source.description().filter(|d| !d.is_empty()).map(str::to_string))
        .set_interface_type(source.interface_type().filter(|t| *t != "interface").map(str::to_string))
        .set_secondary_private_ip_address_count(
            // Keep the number of secondary addresses, not the addresses themselves.
            source.secondary_private_ip_address_count().or_else(|| {
                let secondary = source.private_ip_addresses().iter().filter(|a| a.primary() != Some(true)).count();
                i32::try_from(secondary).ok().filter(|n| *n > 0)
            }),
        )
        .build()
}

/// The `sg-…` id in `value`. EC2 reports plain ids; the emulator reports a stringified
/// `{'GroupId': 'sg-…'}`: take the id from either, and drop anything without one.
fn security_group_id(value: &str) -> Option<String> {
    let start = value.find("sg-")?;
    let id: String = value[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    (id.len() > 3).then_some(id)
}

fn clean_tag_specification(spec: &LaunchTemplateTagSpecification) -> Option<LaunchTemplateTagSpecificationRequest> {
    let kept: Vec<_> = spec
        .tags()
        .iter()
        .filter(|t| t.key().is_some_and(|k| !tags::is_aws_reserved(k) && !tags::is_amiguard(k)))
        .cloned()
        .collect();
    if kept.is_empty() {
        return None;
    }
    Some(
        LaunchTemplateTagSpecificationRequest::builder()
            .set_resource_type(spec.resource_type().cloned())
            .set_tags(Some(kept))
            .build(),
    )
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use aws_sdk_ec2::types::{
        InstanceIpv6Address, InstanceType, LaunchTemplatePlacement, PrivateIpAddressSpecification, ResourceType, Tag,
    };

    fn tag(k: &str, v: &str) -> Tag {
        Tag::builder().key(k).value(v).build()
    }

    fn source() -> ResponseLaunchTemplateData {
        ResponseLaunchTemplateData::builder()
            .image_id("ami-old")
            .instance_type(InstanceType::M5Large)
            .key_name("ops")
            .kernel_id("aki-1")
            .network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id("subnet-1")
                    .network_interface_id("eni-source")
                    .private_ip_address("10.0.0.5")
                    .private_ip_addresses(
                        PrivateIpAddressSpecification::builder().primary(true).private_ip_address("10.0.0.5").build(),
                    )
                    .private_ip_addresses(
                        PrivateIpAddressSpecification::builder().primary(false).private_ip_address("10.0.0.6").build(),
                    )
                    .ipv6_addresses(InstanceIpv6Address::builder().ipv6_address("fd00::1").build())
                    .groups("{'GroupId': 'sg-0abc123'}")
                    .groups("sg-0def456")
                    .associate_public_ip_address(true)
                    .build(),
            )
            .security_group_ids("sg-ignored-when-interfaces")
            .placement(
                LaunchTemplatePlacement::builder()
                    .availability_zone("us-east-1a")
                    .host_id("h-1")
                    .group_name("")
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(tag("Name", "db"))
                    .tags(tag("aws:cloudformation:stack-id", "x"))
                    .tags(tag("amiguard:snapshot-on-stop", "true"))
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .tags(tag("aws:backup:x", "y"))
                    .build(),
            )
            .build()
    }

    #[test]
    fn points_at_the_new_image_and_keeps_the_configuration() {
        let data = relaunch_data(&source(), "ami-new");
        assert_eq!(data.image_id(), Some("ami-new"));
        assert_eq!(data.instance_type(), Some(&InstanceType::M5Large));
        assert_eq!(data.key_name(), Some("ops"));
        assert_eq!(data.placement().unwrap().availability_zone(), Some("us-east-1a"));
        assert_eq!(data.kernel_id(), None, "the AMI carries its kernel");
    }

    #[test]
    fn drops_what_belongs_to_the_source_instance() {
        let data = relaunch_data(&source(), "ami-new");
        let nic = &data.network_interfaces()[0];
        assert_eq!(nic.network_interface_id(), None);
        assert_eq!(nic.private_ip_address(), None);
        assert!(nic.private_ip_addresses().is_empty());
        assert!(nic.ipv6_addresses().is_empty());
        assert_eq!(nic.secondary_private_ip_address_count(), Some(1), "the count of secondary IPs is kept");
        assert_eq!(nic.subnet_id(), Some("subnet-1"));
        assert_eq!(nic.associate_public_ip_address(), Some(true));
        assert_eq!(data.placement().unwrap().host_id(), None);
        assert_eq!(data.placement().unwrap().group_name(), None, "an empty group name is not a group");
    }

    #[test]
    fn security_groups_go_on_the_interfaces_cleaned_of_emulator_noise() {
        let data = relaunch_data(&source(), "ami-new");
        assert_eq!(data.network_interfaces()[0].groups(), ["sg-0abc123", "sg-0def456"]);
        assert!(data.security_group_ids().is_empty());
        let without_nics =
            ResponseLaunchTemplateData::builder().security_group_ids("sg-1").security_group_ids("junk").build();
        assert_eq!(relaunch_data(&without_nics, "ami-2").security_group_ids(), ["sg-1"]);
    }

    #[test]
    fn copies_user_tags_only() {
        let data = relaunch_data(&source(), "ami-new");
        assert_eq!(data.tag_specifications().len(), 1, "a spec left with no tags is dropped");
        let keys: Vec<_> = data.tag_specifications()[0].tags().iter().filter_map(|t| t.key()).collect();
        assert_eq!(keys, ["Name"]);
    }
}
