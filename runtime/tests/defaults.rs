//! Published defaults are the values objects really get: a `default = fn` hook that replaces
//! serde's default publishes its own value, one that decides on other fields publishes none,
//! and a default the hook leaves alone stays.

use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn one_hundred() -> i32 {
    100
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PumpSpec {
    /// 0 means "not given": the hook makes it 100 (the case).
    #[serde(default)]
    pub rate: i32,
    /// The hook picks it from `mode`, so no single value is the default.
    #[serde(default)]
    pub port: i32,
    /// Left alone by the hook: serde's default is the truth.
    #[serde(default = "one_hundred")]
    pub burst: i32,
    /// Required, decides `port`.
    pub mode: String,
    /// Defaults inside list items are probed through one item.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Stage {
    /// The hook names unnamed stages.
    #[serde(default)]
    pub name: String,
}

#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", namespaced, default = default_pump)]
pub struct Pump {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: PumpSpec,
}

fn default_pump(pump: &mut Pump) {
    let spec = &mut pump.spec;
    if spec.rate == 0 {
        spec.rate = 100;
    }
    if spec.port == 0 {
        spec.port = if spec.mode.is_empty() { 80 } else { 443 };
    }
    for stage in &mut spec.stages {
        if stage.name.is_empty() {
            stage.name = "main".into();
        }
    }
}

/// The same fields without a hook: every serde default is published as it is.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Tap", namespaced)]
pub struct Tap {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: PumpSpec,
}

fn defaults_of(schema: &Value) -> Value {
    let spec = &schema["properties"]["spec"]["properties"];
    json!({
        "rate": spec["rate"].get("default"),
        "port": spec["port"].get("default"),
        "burst": spec["burst"].get("default"),
        "stages": spec["stages"].get("default"),
        "stageName": spec["stages"]["items"]["properties"]["name"].get("default"),
    })
}

#[test]
fn a_default_hook_publishes_what_it_does() {
    assert_eq!(
        defaults_of(&Pump::openapi_schema()),
        json!({"rate": 100, "port": null, "burst": 100, "stages": [], "stageName": "main"})
    );
}

#[test]
fn without_a_hook_serde_defaults_are_published() {
    assert_eq!(
        defaults_of(&Tap::openapi_schema()),
        json!({"rate": 0, "port": 0, "burst": 100, "stages": [], "stageName": ""})
    );
}
