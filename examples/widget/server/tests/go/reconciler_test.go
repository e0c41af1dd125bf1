package widgettests

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	customv1 "example.com/apiary/widget-client-go/pkg/apis/custom/v1"
)

// statusReconciler is the smallest useful controller of Widgets: it reports every Widget's
// replicas as available, with the phase that follows.
type statusReconciler struct {
	client.Client
}

func (r *statusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var w customv1.Widget
	if err := r.Get(ctx, req.NamespacedName, &w); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	phase := customv1.WidgetStatusPhasePending
	if w.Spec.Replicas > 0 {
		phase = customv1.WidgetStatusPhaseRunning
	}
	if w.Status != nil && w.Status.AvailableReplicas != nil && *w.Status.AvailableReplicas == w.Spec.Replicas {
		return ctrl.Result{}, nil
	}
	w.Status = &customv1.WidgetStatus{AvailableReplicas: ptr.To(w.Spec.Replicas), Phase: &phase}
	return ctrl.Result{}, r.Status().Update(ctx, &w)
}

// TestReconciler runs a controller-runtime manager with the generated types in its scheme
// (the Widget server's own status logic is off for this test).
func TestReconciler(t *testing.T) {
	cfg := config(t)
	scheme := runtime.NewScheme()
	if err := customv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	ns, run := namespace(), unique("reconciled")
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ctrl.NewControllerManagedBy(mgr).For(&customv1.Widget{}).Named(fmt.Sprintf("widget-status-%s", run)).
		Complete(&statusReconciler{Client: mgr.GetClient()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()

	c := mgr.GetClient()
	w := &customv1.Widget{
		ObjectMeta: metav1.ObjectMeta{Name: run, Namespace: ns},
		Spec:       customv1.WidgetSpec{Image: "nginx:1.27", Replicas: 2},
	}
	if err := c.Create(ctx, w); err != nil {
		t.Fatalf("create: %v", err)
	}
	available := func(want int32) func() bool {
		return func() bool {
			var got customv1.Widget
			if err := c.Get(ctx, client.ObjectKeyFromObject(w), &got); err != nil {
				return false
			}
			return got.Status != nil && got.Status.AvailableReplicas != nil && *got.Status.AvailableReplicas == want &&
				*got.Status.Phase == customv1.WidgetStatusPhaseRunning
		}
	}
	eventually(t, "the reconciler's status", available(2))

	// A change of spec is reconciled too.
	patch := client.MergeFrom(w.DeepCopy())
	w.Spec.Replicas = 5
	if err := c.Patch(ctx, w, patch); err != nil {
		t.Fatalf("patch: %v", err)
	}
	eventually(t, "the reconciled scale-up", available(5))

	if err := c.Delete(ctx, w); err != nil {
		t.Fatalf("delete: %v", err)
	}
	eventually(t, "the deletion", func() bool {
		return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(w), &customv1.Widget{}))
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("manager: %v", err)
	}
}
