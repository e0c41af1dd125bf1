#!/usr/bin/env bash
# Regenerates openapi/zz_generated.openapi.go with k8s.io/code-generator's kube_codegen.sh
# (openapi-gen over the Widget types and the apimachinery types they use), as
# sample-apiserver's hack/update-codegen.sh does.
set -o errexit -o nounset -o pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
export GOBIN="${APIARY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/apiary}/code-generator-v0.37.2/bin"
CODEGEN="$(go mod download -json k8s.io/code-generator@v0.37.2 | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
source "${CODEGEN}/kube_codegen.sh"
kube::codegen::gen_openapi \
    --output-dir openapi \
    --output-pkg example.com/apiary/widget-go-peer/openapi \
    --extra-pkgs k8s.io/apimachinery/pkg/apis/meta/v1 \
    --extra-pkgs k8s.io/apimachinery/pkg/runtime \
    --extra-pkgs k8s.io/apimachinery/pkg/version \
    --extra-pkgs k8s.io/api/autoscaling/v1 \
    --boilerplate hack/boilerplate.go.txt \
    --report-filename hack/api-rule-violations.list --update-report \
    ../../../client-go/pkg/apis
