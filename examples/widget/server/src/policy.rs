//! The WidgetPolicy admission step (sample-apiserver's BanFlunder, in Rust): a Widget whose
//! image a cluster-scoped WidgetPolicy denies is refused with 403, naming the policy. Like an
//! informer-fed plugin, it sees a new policy once the watch cache has it (within milliseconds).

use apiary_runtime::admission::{Attributes, Operation, TypedAdmission, async_trait};
use apiary_runtime::registry::{ListOptions, Objects};
use apiary_runtime::status::{ApiError, ApiResult};
use widget_api::{Widget, WidgetPolicy};

/// Refuses Widgets running an image some WidgetPolicy denies.
pub struct DeniedImages {
    /// The WidgetPolicies of this same server.
    pub policies: Objects<WidgetPolicy>,
}

#[async_trait]
impl TypedAdmission<Widget> for DeniedImages {
    // Validation only: no decode and re-encode of every Widget before the strategy.
    const MUTATES: bool = false;

    fn name(&self) -> &str {
        "WidgetPolicy"
    }

    async fn validate(&self, attributes: &Attributes<'_>, widget: &Widget, old: Option<&Widget>) -> ApiResult<()> {
        // Deletes and status writes do not change the image; an unchanged image is not
        // re-judged, so a new policy does not block labelling or finalizing old Widgets.
        let unchanged = old.is_some_and(|o| o.spec.image == widget.spec.image);
        if attributes.operation == Operation::Delete || attributes.subresource == "status" || unchanged {
            return Ok(());
        }
        // From the watch cache as it stands (`resourceVersion=0`), as sample-apiserver's
        // BanFlunder reads its informer: a consistent read would cost a storage round trip
        // per write, for policies that change rarely.
        let cached = ListOptions {
            resource_version: Some("0".into()),
            ..ListOptions::default()
        };
        for policy in self.policies.list(&cached).await?.items {
            if let Some(entry) = policy.spec.denies(&widget.spec.image) {
                let name = policy.metadata.name.unwrap_or_default();
                return Err(ApiError::forbidden(
                    attributes.meta,
                    attributes.name,
                    format!(
                        "image \"{}\" is denied by WidgetPolicy \"{name}\" (deniedImages: \"{entry}\")",
                        widget.spec.image
                    ),
                ));
            }
        }
        Ok(())
    }
}
