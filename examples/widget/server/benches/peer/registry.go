package main

import (
	"context"
	"fmt"
	"strings"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	customv1 "example.com/apiary/widget-client-go/pkg/apis/custom/v1"
)

// widgetStrategy is the Widget's create, update and delete logic: defaults, generation and
// validation (the Rust type's rules: replicas 0 to 100, an image with a version).
type widgetStrategy struct {
	runtime.ObjectTyper
	names.NameGenerator
}

func (widgetStrategy) NamespaceScoped() bool { return true }

func (widgetStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"custom.example.com/v1": fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

func (widgetStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	w := obj.(*customv1.Widget)
	w.Status = nil
	w.Generation = 1
	defaultSpec(&w.Spec)
}

func (widgetStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	w, before := obj.(*customv1.Widget), old.(*customv1.Widget)
	w.Status = before.Status
	defaultSpec(&w.Spec)
	if !equality.Semantic.DeepEqual(w.Spec, before.Spec) {
		w.Generation = before.Generation + 1
	}
}

func (widgetStrategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	return validateSpec(&obj.(*customv1.Widget).Spec)
}

func (widgetStrategy) ValidateUpdate(_ context.Context, obj, _ runtime.Object) field.ErrorList {
	return validateSpec(&obj.(*customv1.Widget).Spec)
}

func (widgetStrategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }

func (widgetStrategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

func (widgetStrategy) AllowCreateOnUpdate(context.Context) bool { return false }

func (widgetStrategy) AllowUnconditionalUpdate(context.Context) bool { return true }

func (widgetStrategy) Canonicalize(runtime.Object) {}

func defaultSpec(spec *customv1.WidgetSpec) {
	if spec.Color == nil {
		blue := "blue"
		spec.Color = &blue
	}
}

func validateSpec(spec *customv1.WidgetSpec) field.ErrorList {
	var errs field.ErrorList
	path := field.NewPath("spec")
	if spec.Replicas < 0 || spec.Replicas > 100 {
		errs = append(errs, field.Invalid(path.Child("replicas"), spec.Replicas, "must be between 0 and 100"))
	}
	if spec.Image == "" {
		errs = append(errs, field.Required(path.Child("image"), ""))
	} else if strings.HasSuffix(spec.Image, ":latest") {
		errs = append(errs, field.Invalid(path.Child("image"), spec.Image, "must name a version, not :latest"))
	}
	return errs
}

// statusStrategy writes the status alone.
type statusStrategy struct{ widgetStrategy }

func (statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"custom.example.com/v1": fieldpath.NewSet(fieldpath.MakePathOrDie("spec")),
	}
}

func (statusStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	obj.(*customv1.Widget).Spec = old.(*customv1.Widget).Spec
}

func (statusStrategy) ValidateUpdate(context.Context, runtime.Object, runtime.Object) field.ErrorList {
	return nil
}

// newWidgetStorage is widgets, widgets/status and widgets/scale on one generic store.
func newWidgetStorage(scheme *runtime.Scheme, options generic.RESTOptionsGetter) (map[string]rest.Storage, error) {
	strategy := widgetStrategy{scheme, names.SimpleNameGenerator}
	store := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return &customv1.Widget{} },
		NewListFunc:               func() runtime.Object { return &customv1.WidgetList{} },
		DefaultQualifiedResource:  customv1.Resource("widgets"),
		SingularQualifiedResource: customv1.Resource("widget"),
		CreateStrategy:            strategy,
		UpdateStrategy:            strategy,
		DeleteStrategy:            strategy,
		ResetFieldsStrategy:       strategy,
		TableConvertor:            rest.NewDefaultTableConvertor(customv1.Resource("widgets")),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: options}); err != nil {
		return nil, err
	}
	statusStore := *store
	statusStore.UpdateStrategy = statusStrategy{strategy}
	statusStore.ResetFieldsStrategy = statusStrategy{strategy}
	return map[string]rest.Storage{
		"widgets":        store,
		"widgets/status": &statusREST{store: &statusStore},
		"widgets/scale":  &scaleREST{store: store},
	}, nil
}

// statusREST serves widgets/status.
type statusREST struct{ store *genericregistry.Store }

var _ rest.Patcher = &statusREST{}

func (r *statusREST) New() runtime.Object { return &customv1.Widget{} }

func (r *statusREST) Destroy() {}

func (r *statusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}

func (r *statusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo,
	createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc,
	_ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}

func (r *statusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

func (r *statusREST) ConvertToTable(ctx context.Context, object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}

// scaleREST serves widgets/scale as autoscaling/v1 Scale.
type scaleREST struct{ store *genericregistry.Store }

var (
	_ rest.Patcher                 = &scaleREST{}
	_ rest.GroupVersionKindProvider = &scaleREST{}
)

func (r *scaleREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return autoscalingv1.SchemeGroupVersion.WithKind("Scale")
}

func (r *scaleREST) New() runtime.Object { return &autoscalingv1.Scale{} }

func (r *scaleREST) Destroy() {}

func (r *scaleREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	obj, err := r.store.Get(ctx, name, options)
	if err != nil {
		return nil, err
	}
	return scaleOf(obj.(*customv1.Widget)), nil
}

func (r *scaleREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo,
	_ rest.ValidateObjectFunc, _ rest.ValidateObjectUpdateFunc,
	_ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	obj, _, err := r.store.Update(ctx, name, &scaleUpdate{objInfo}, rest.ValidateAllObjectFunc,
		rest.ValidateAllObjectUpdateFunc, false, options)
	if err != nil {
		return nil, false, err
	}
	return scaleOf(obj.(*customv1.Widget)), false, nil
}

func (r *scaleREST) ConvertToTable(ctx context.Context, object, tableOptions runtime.Object) (*metav1.Table, error) {
	return rest.NewDefaultTableConvertor(customv1.Resource("widgets/scale")).ConvertToTable(ctx, object, tableOptions)
}

func scaleOf(w *customv1.Widget) *autoscalingv1.Scale {
	var available int32
	if w.Status != nil && w.Status.AvailableReplicas != nil {
		available = *w.Status.AvailableReplicas
	}
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: w.Namespace, UID: w.UID,
			ResourceVersion: w.ResourceVersion, CreationTimestamp: w.CreationTimestamp},
		Spec:   autoscalingv1.ScaleSpec{Replicas: w.Spec.Replicas},
		Status: autoscalingv1.ScaleStatus{Replicas: available},
	}
}

// scaleUpdate applies a Scale written by the client to the stored Widget.
type scaleUpdate struct{ scale rest.UpdatedObjectInfo }

func (u *scaleUpdate) Preconditions() *metav1.Preconditions { return u.scale.Preconditions() }

func (u *scaleUpdate) UpdatedObject(ctx context.Context, old runtime.Object) (runtime.Object, error) {
	w := old.(*customv1.Widget).DeepCopy()
	obj, err := u.scale.UpdatedObject(ctx, scaleOf(w))
	if err != nil {
		return nil, err
	}
	scale, ok := obj.(*autoscalingv1.Scale)
	if !ok {
		return nil, fmt.Errorf("expected a Scale, got %T", obj)
	}
	w.Spec.Replicas = scale.Spec.Replicas
	if scale.ResourceVersion != "" {
		w.ResourceVersion = scale.ResourceVersion
	}
	return w, nil
}
