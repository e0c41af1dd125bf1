package widgettests

import (
	"context"
	"sync"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	customv1 "example.com/apiary/widget-client-go/pkg/apis/custom/v1"
	customv1alpha1 "example.com/apiary/widget-client-go/pkg/apis/custom/v1alpha1"
	applyv1 "example.com/apiary/widget-client-go/pkg/generated/applyconfiguration/custom/v1"
	"example.com/apiary/widget-client-go/pkg/generated/clientset/versioned"
	"example.com/apiary/widget-client-go/pkg/generated/informers/externalversions"
)

// events records what an informer's handler saw, by object name.
type events struct {
	sync.Mutex
	added, updated, deleted map[string]int
	lastReplicas            map[string]int32
}

func (e *events) count(kind map[string]int, name string) int {
	e.Lock()
	defer e.Unlock()
	return kind[name]
}

func (e *events) replicas(name string) int32 {
	e.Lock()
	defer e.Unlock()
	return e.lastReplicas[name]
}

func watchWidgets(t *testing.T, ctx context.Context, cs versioned.Interface, ns, run string) (*events, externalversions.SharedInformerFactory) {
	t.Helper()
	seen := &events{added: map[string]int{}, updated: map[string]int{}, deleted: map[string]int{}, lastReplicas: map[string]int32{}}
	factory := externalversions.NewSharedInformerFactoryWithOptions(cs, 0,
		externalversions.WithNamespace(ns),
		externalversions.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "run=" + run }))
	informer := factory.Custom().V1().Widgets().Informer()
	record := func(kind map[string]int, obj any) {
		if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		w := obj.(*customv1.Widget)
		seen.Lock()
		defer seen.Unlock()
		kind[w.Name]++
		seen.lastReplicas[w.Name] = w.Spec.Replicas
	}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { record(seen.added, obj) },
		UpdateFunc: func(_, obj any) { record(seen.updated, obj) },
		DeleteFunc: func(obj any) { record(seen.deleted, obj) },
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("informer of %v did not sync", typ)
		}
	}
	return seen, factory
}

// TestClientset drives every typed call of the generated clientset, an informer and its lister.
func TestClientset(t *testing.T) {
	cs := versioned.NewForConfigOrDie(config(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns, run := namespace(), unique("go")
	widgets := cs.CustomV1().Widgets(ns)
	seen, factory := watchWidgets(t, ctx, cs, ns, run)
	defer factory.Shutdown()

	// Create two; the server fills in the color's default.
	a, b := run+"-a", run+"-b"
	for name, tier := range map[string]string{a: "front", b: "back"} {
		w := &customv1.Widget{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"run": run, "tier": tier}},
			Spec:       customv1.WidgetSpec{Image: "nginx:1.27", Replicas: 3},
		}
		if _, err := widgets.Create(ctx, w, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	got, err := widgets.Get(ctx, a, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Color == nil || *got.Spec.Color != "blue" || got.Spec.Replicas != 3 || got.Generation != 1 {
		t.Fatalf("get: %+v", got)
	}
	if _, err := widgets.Create(ctx, got, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v, want AlreadyExists", err)
	}

	// The same object at the other version (converted by the server).
	alpha, err := cs.CustomV1alpha1().Widgets(ns).Get(ctx, a, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if alpha.Spec.Size != customv1alpha1.WidgetSpecSizeMedium || alpha.Spec.Image != "nginx:1.27" {
		t.Fatalf("v1alpha1: %+v", alpha.Spec)
	}

	// A label selector.
	front, err := widgets.List(ctx, metav1.ListOptions{LabelSelector: "run=" + run + ",tier=front"})
	if err != nil {
		t.Fatal(err)
	}
	if len(front.Items) != 1 || front.Items[0].Name != a {
		t.Fatalf("list tier=front: %+v", front.Items)
	}

	// The informer saw both, and its lister serves them.
	eventually(t, "the informer's adds", func() bool { return seen.count(seen.added, a) == 1 && seen.count(seen.added, b) == 1 })
	lister := factory.Custom().V1().Widgets().Lister().Widgets(ns)
	if cached, err := lister.Get(a); err != nil || cached.Spec.Image != "nginx:1.27" {
		t.Fatalf("lister: %v %v", cached, err)
	}

	// Update (with the conflict retry every client-go caller writes).
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := widgets.Get(ctx, a, metav1.GetOptions{})
		if err != nil {
			return err
		}
		w.Spec.Replicas = 4
		_, err = widgets.Update(ctx, w, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	eventually(t, "the informer's update", func() bool { return seen.replicas(a) == 4 })
	stale := got.DeepCopy()
	stale.Spec.Replicas = 9
	if _, err := widgets.Update(ctx, stale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("update from a stale resourceVersion: %v, want Conflict", err)
	}

	// UpdateStatus writes the status only.
	var written *customv1.Widget
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := widgets.Get(ctx, b, metav1.GetOptions{})
		if err != nil {
			return err
		}
		w.Spec.Replicas = 50 // ignored by /status
		phase := customv1.WidgetStatusPhaseRunning
		w.Status = &customv1.WidgetStatus{AvailableReplicas: ptr.To[int32](3), Phase: &phase}
		written, err = widgets.UpdateStatus(ctx, w, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	if written.Status == nil || *written.Status.AvailableReplicas != 3 || *written.Status.Phase != "Running" || written.Spec.Replicas != 3 {
		t.Fatalf("update status wrote %+v / %+v", written.Spec, written.Status)
	}

	// The scale subresource.
	var scale *autoscalingv1.Scale
	scale, err = widgets.GetScale(ctx, a, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if scale.Spec.Replicas != 4 || scale.Name != a {
		t.Fatalf("scale: %+v", scale)
	}
	scale.Spec.Replicas = 7
	if _, err := widgets.UpdateScale(ctx, a, scale, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update scale: %v", err)
	}
	if w, _ := widgets.Get(ctx, a, metav1.GetOptions{}); w.Spec.Replicas != 7 {
		t.Fatalf("after scale: %d replicas", w.Spec.Replicas)
	}

	// Server-side apply with the apply configurations: a new object, then a change of one field.
	c := run + "-c"
	apply := applyv1.Widget(c, ns).
		WithLabels(map[string]string{"run": run}).
		WithSpec(applyv1.WidgetSpec().WithImage("nginx:1.27").WithReplicas(2))
	applied, err := widgets.Apply(ctx, apply, metav1.ApplyOptions{FieldManager: "go-tests"})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if applied.Spec.Replicas != 2 || len(applied.ManagedFields) == 0 || applied.ManagedFields[0].Manager != "go-tests" {
		t.Fatalf("apply: %+v %+v", applied.Spec, applied.ManagedFields)
	}
	apply.Spec.WithReplicas(5)
	if applied, err = widgets.Apply(ctx, apply, metav1.ApplyOptions{FieldManager: "go-tests"}); err != nil || applied.Spec.Replicas != 5 {
		t.Fatalf("second apply: %v %v", applied, err)
	}
	// Another manager changing the same field conflicts unless it forces.
	other := applyv1.Widget(c, ns).WithSpec(applyv1.WidgetSpec().WithImage("nginx:1.27").WithReplicas(6))
	if _, err := widgets.Apply(ctx, other, metav1.ApplyOptions{FieldManager: "someone-else"}); !apierrors.IsConflict(err) {
		t.Fatalf("conflicting apply: %v, want Conflict", err)
	}
	status := applyv1.Widget(c, ns).WithStatus(applyv1.WidgetStatus().WithAvailableReplicas(5))
	if applied, err = widgets.ApplyStatus(ctx, status, metav1.ApplyOptions{FieldManager: "go-tests", Force: true}); err != nil || *applied.Status.AvailableReplicas != 5 {
		t.Fatalf("apply status: %v %v", applied, err)
	}

	// A cluster-scoped kind.
	policies := cs.CustomV1().WidgetPolicies()
	policy := &customv1.WidgetPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: run},
		Spec:       customv1.WidgetPolicySpec{DeniedImages: []string{"registry.example.com/" + run + "/*"}},
	}
	if _, err := policies.Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	if err := policies.Delete(ctx, run, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete policy: %v", err)
	}

	// Delete: gone for Get, and the informer hears it.
	for _, name := range []string{a, b, c} {
		if err := widgets.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
	if _, err := widgets.Get(ctx, a, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}
	eventually(t, "the informer's deletes", func() bool {
		return seen.count(seen.deleted, a) == 1 && seen.count(seen.deleted, b) == 1 && seen.count(seen.deleted, c) == 1
	})
}
