// Command widget-go-peer is the Widget server of the aggregation recipe written on
// k8s.io/apiserver as a Go team would write it: the HTTP benchmark's peer of the Rust server.
// It serves custom.example.com/v1 widgets with their status and scale subresources from etcd
// (watch cache on, its default), with the generated Go types of examples/widget/client-go.
//
// Without --authentication-kubeconfig and --authorization-kubeconfig it runs on its own:
// client certificates from --client-ca-file authenticate, and system:masters may do anything.
package main

import (
	"net"
	"os"

	"github.com/spf13/pflag"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/component-base/compatibility"
	"k8s.io/klog/v2"

	customv1 "example.com/apiary/widget-client-go/pkg/apis/custom/v1"
	"example.com/apiary/widget-go-peer/openapi"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	utilruntime.Must(customv1.AddToScheme(scheme))
	utilruntime.Must(autoscalingv1.AddToScheme(scheme))
	// One version and no internal types: the versioned types stand in for the internal ones
	// (as k8s.io/apiserver-runtime does), so the codec converts nothing.
	scheme.AddKnownTypes(schema.GroupVersion{Group: customv1.GroupName, Version: runtime.APIVersionInternal},
		&customv1.Widget{}, &customv1.WidgetList{})
	scheme.AddKnownTypes(schema.GroupVersion{Group: autoscalingv1.GroupName, Version: runtime.APIVersionInternal},
		&autoscalingv1.Scale{})
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	scheme.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
}

func main() {
	if err := run(); err != nil {
		klog.ErrorS(err, "widget-go-peer")
		os.Exit(1)
	}
}

func run() error {
	opts := genericoptions.NewRecommendedOptions("/registry/widget-go-peer",
		codecs.LegacyCodec(customv1.SchemeGroupVersion))
	opts.Authentication.RemoteKubeConfigFileOptional = true
	opts.Authorization.RemoteKubeConfigFileOptional = true
	opts.CoreAPI = nil
	opts.Admission = nil
	// Inflight limits (400 reads, 200 writes) as Apiary has, not priority and fairness (which
	// reads its configuration from a core API).
	opts.Features.EnablePriorityAndFairness = false
	opts.AddFlags(pflag.CommandLine)
	pflag.Parse()
	if err := opts.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil,
		[]net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return err
	}

	config := genericapiserver.NewRecommendedConfig(codecs)
	config.EffectiveVersion = compatibility.NewEffectiveVersionFromString("1.37", "", "")
	namer := openapinamer.NewDefinitionNamer(scheme)
	config.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	config.OpenAPIConfig.Info.Title = "widget-go-peer"
	config.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	config.OpenAPIV3Config.Info.Title = "widget-go-peer"
	if err := opts.ApplyTo(config); err != nil {
		return err
	}
	server, err := config.Complete().New("widget-go-peer", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}
	group := genericapiserver.NewDefaultAPIGroupInfo(customv1.GroupName, scheme, metav1.ParameterCodec, codecs)
	storage, err := newWidgetStorage(scheme, config.RESTOptionsGetter)
	if err != nil {
		return err
	}
	group.VersionedResourcesStorageMap["v1"] = storage
	if err := server.InstallAPIGroup(&group); err != nil {
		return err
	}
	return server.PrepareRun().RunWithContext(genericapiserver.SetupSignalContext())
}
