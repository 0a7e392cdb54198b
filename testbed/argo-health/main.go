// argo-health runs Argo CD's own resource health assessment over Kubernetes
// objects, with the health scripts of an argocd-cm ConfigMap, and prints one
// JSON line per object: {"kind", "name", "status", "message"}.
//
// It calls what Argo CD's application controller calls for every live
// resource (controller/health.go): gitops-engine's health.GetResourceHealth
// with util/lua's ResourceHealthOverrides built from argocd-cm. Only the
// reading of argocd-cm's split keys (resource.customizations.<type>.<group_kind>)
// is done here, following util/settings appendResourceOverridesFromSplitKeys,
// because that code sits behind a SettingsManager that needs a live clientset.
//
// Usage: argo-health ARGOCD-CM.yaml < objects.json   (a JSON array, or one
// object, or a List with .items)
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/health"
	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const prefix = "resource.customizations."

type configMap struct {
	Kind string            `json:"kind"`
	Data map[string]string `json:"data"`
}

// overrides reads the health customisations of an argocd-cm the way Argo CD
// does: key resource.customizations.<health|useOpenLibs>.<group>_<kind>.
func overrides(cm configMap) (map[string]appv1.ResourceOverride, error) {
	out := map[string]appv1.ResourceOverride{}
	for k, v := range cm.Data {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		parts := strings.SplitN(k, ".", 4)
		if len(parts) < 4 {
			continue
		}
		gk := strings.Split(parts[3], "_")
		if len(gk) != 2 {
			return nil, fmt.Errorf("key %q: want resource.customizations.<type>.<group>_<kind>", k)
		}
		key := gk[0] + "/" + gk[1]
		o := out[key]
		switch parts[2] {
		case "health":
			o.HealthLua = v
		case "useOpenLibs":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
			o.UseOpenLibs = b
		default:
			return nil, fmt.Errorf("key %q: customization type %q is not read by argo-health", k, parts[2])
		}
		out[key] = o
	}
	return out, nil
}

func readObjects(r io.Reader) ([]unstructured.Unstructured, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil {
		var one map[string]any
		if err2 := json.Unmarshal(raw, &one); err2 != nil {
			return nil, fmt.Errorf("objects on stdin: %w", err)
		}
		if list, ok := one["items"].([]any); ok && strings.HasSuffix(fmt.Sprint(one["kind"]), "List") {
			for _, it := range list {
				m, ok := it.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("objects on stdin: a List item is not an object")
				}
				items = append(items, m)
			}
		} else {
			items = []map[string]any{one}
		}
	}
	objs := make([]unstructured.Unstructured, 0, len(items))
	for _, m := range items {
		objs = append(objs, unstructured.Unstructured{Object: m})
	}
	return objs, nil
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: argo-health ARGOCD-CM.yaml < objects.json")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var cm configMap
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		return fmt.Errorf("%s: %w", os.Args[1], err)
	}
	if cm.Kind != "ConfigMap" {
		return fmt.Errorf("%s: kind %q, want ConfigMap", os.Args[1], cm.Kind)
	}
	ovr, err := overrides(cm)
	if err != nil {
		return err
	}
	objs, err := readObjects(os.Stdin)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for i := range objs {
		obj := &objs[i]
		res := map[string]string{"kind": obj.GetKind(), "name": obj.GetName()}
		h, err := health.GetResourceHealth(obj, lua.ResourceHealthOverrides(ovr))
		switch {
		case err != nil:
			res["error"] = err.Error()
		case h == nil:
			res["status"] = "" // Argo CD has no health check for this kind
		default:
			res["status"] = string(h.Status)
			res["message"] = h.Message
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "argo-health:", err)
		os.Exit(2)
	}
}
