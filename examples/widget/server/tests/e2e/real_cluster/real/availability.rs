//! The aggregator's availability check against the real server: down, the APIServices turn
//! `Available=False` and requests through the aggregator get 503; up again, both recover.

use super::Fixture;

/// Stop the server, see the cluster notice, start it, see the cluster recover.
pub async fn follows_the_server(f: &mut Fixture) {
    let k = f.kubectl(None);
    f.stop_server();
    let names = f.extension.apiservices();
    for name in &names {
        let (_, reason, message) = f.cluster.wait_apiservice(name, false).await.unwrap();
        assert_eq!(reason, "FailedDiscoveryCheck", "{name}: {message}");
        assert!(message.contains("connection refused"), "{name}: {message}");
    }
    // The aggregator answers for the unavailable server itself: 503 ServiceUnavailable.
    let raw = k.run(&["get", "--raw", "/apis/custom.example.com/v1/namespaces/default/widgets"]);
    assert_eq!(raw.code, 1);
    assert!(
        raw.stderr
            .contains("Error from server (ServiceUnavailable): the server is currently unable to handle the request"),
        "{}",
        raw.stderr
    );
    // Aggregated discovery leaves out an unavailable group's resources, so kubectl does not
    // even find the resource.
    let get = k.run(&["get", "widgets.custom.example.com"]);
    assert!(
        get.stderr
            .contains(r#"the server doesn't have a resource type "widgets" in group "custom.example.com""#),
        "{}",
        get.stderr
    );

    f.start_server().await;
    for name in &names {
        let (_, reason, _) = f.cluster.wait_apiservice(name, true).await.unwrap();
        assert_eq!(reason, "Passed", "{name}");
    }
    k.ok(&["get", "widgets"]);
}
