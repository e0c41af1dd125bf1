//! The v1 ↔ v1alpha1 Widget conversions round-trip: property tests over random objects (a
//! fixed-seed generator, so a failure names a reproducible case).

use std::collections::BTreeMap;

use apiary_runtime::registry::versions::{from_storage, to_storage};
use apiary_runtime::testing::Rng as Random;
use widget_api::v1alpha1::{self, Size, V1_SPEC};
use widget_api::{Widget, WidgetSpec, WidgetStatus};

fn metadata(r: &mut Random, i: usize) -> apiary_runtime::prelude::ObjectMeta {
    let mut annotations = BTreeMap::new();
    for _ in 0..r.below(3) {
        annotations.insert(
            r.pick(&["a", "example.com/b", "c.d/e"]).to_string(),
            r.pick(&["", "x", "{}"]).to_string(),
        );
    }
    apiary_runtime::prelude::ObjectMeta {
        name: Some(format!("w{i}")),
        namespace: Some("default".into()),
        labels: (r.below(2) == 0).then(|| BTreeMap::from([("app".to_string(), "demo".to_string())])),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..Default::default()
    }
}

fn status(r: &mut Random) -> Option<WidgetStatus> {
    (r.below(2) == 0).then(|| WidgetStatus {
        available_replicas: r.below(10) as i32,
        ..Default::default()
    })
}

fn random_v1(r: &mut Random, i: usize) -> Widget {
    Widget {
        metadata: metadata(r, i),
        spec: WidgetSpec {
            replicas: r.below(101) as i32,
            image: r.pick(&["nginx:1.27", "redis:7", "a/b:c"]).to_string(),
            color: r.pick(&["blue", "red", "green", "dark blue"]).to_string(),
        },
        status: status(r),
    }
}

#[test]
fn v1_to_v1alpha1_and_back_keeps_everything() {
    let mut r = Random(0x5eed);
    for i in 0..2000 {
        let original = random_v1(&mut r, i);
        let alpha = v1alpha1::Widget::from(original.clone());
        assert_eq!(alpha.spec.size, Size::of(original.spec.replicas), "case {i}");
        assert_eq!(Widget::from(alpha), original, "case {i}");
    }
}

#[test]
fn v1alpha1_to_v1_and_back_keeps_everything() {
    let mut r = Random(0xa1fa);
    for i in 0..2000 {
        // A v1alpha1 object as clients write it, or as a conversion from v1 left it.
        let original = if r.below(2) == 0 {
            v1alpha1::Widget::from(random_v1(&mut r, i))
        } else {
            v1alpha1::Widget {
                metadata: metadata(&mut r, i),
                spec: v1alpha1::WidgetSpec {
                    size: [Size::Small, Size::Medium, Size::Large][r.below(3)],
                    image: "nginx:1.27".into(),
                },
                status: status(&mut r),
            }
        };
        let v1 = Widget::from(original.clone());
        assert!(
            v1.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(V1_SPEC)),
            "case {i}"
        );
        assert_eq!(Size::of(v1.spec.replicas), original.spec.size, "case {i}");
        assert_eq!(v1alpha1::Widget::from(v1), original, "case {i}");
    }
}

#[test]
fn a_new_size_sets_its_replicas_and_keeps_the_color() {
    let mut w = random_v1(&mut Random(7), 0);
    w.spec.replicas = 2;
    w.spec.color = "red".into();
    let mut alpha = v1alpha1::Widget::from(w);
    alpha.spec.size = Size::Large;
    let back = Widget::from(alpha);
    assert_eq!((back.spec.replicas, back.spec.color.as_str()), (5, "red"));
}

#[test]
fn json_conversions_set_the_target_type() {
    let mut r = Random(99);
    let v1 = serde_json::to_value(random_v1(&mut r, 1)).unwrap();
    let alpha = from_storage::<v1alpha1::Widget, Widget>(v1.clone()).unwrap();
    assert_eq!(alpha["apiVersion"], "custom.example.com/v1alpha1");
    assert_eq!(alpha["kind"], "Widget");
    let back = to_storage::<v1alpha1::Widget, Widget>(alpha).unwrap();
    assert_eq!(back["apiVersion"], "custom.example.com/v1");
    assert_eq!(back["spec"], v1["spec"]);
    let error = to_storage::<v1alpha1::Widget, Widget>(serde_json::json!({"spec": {"size": "huge"}})).unwrap_err();
    assert!(error.contains("not a custom.example.com/v1alpha1 Widget"), "{error}");
}
