// Package widgettests drives a running Widget server with the generated Go client: the
// clientset, an informer and its lister, apply configurations, and a controller-runtime
// reconciler. The Rust end-to-end suite starts the server and runs these tests with
// WIDGET_KUBECONFIG set (straight to the server, and through a real kube-apiserver's
// aggregator); without it they are skipped.
package widgettests

import (
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// config is the REST config of WIDGET_KUBECONFIG, or skips the test when it is not set.
func config(t *testing.T) *rest.Config {
	t.Helper()
	path := os.Getenv("WIDGET_KUBECONFIG")
	if path == "" {
		t.Skip("WIDGET_KUBECONFIG is not set: the Rust end-to-end suite runs these against a server")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", path, err)
	}
	return cfg
}

// namespace is where the tests create Widgets (WIDGET_NAMESPACE, else "default").
func namespace() string {
	if ns := os.Getenv("WIDGET_NAMESPACE"); ns != "" {
		return ns
	}
	return "default"
}

// unique gives each run its own names, so a rerun against the same server starts clean.
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

// eventually polls check every 50 ms until it returns true, failing after 30 s.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
