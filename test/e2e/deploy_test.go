//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// manifestObjects reads every object of the YAML files under deploy/ that
// are whole objects (kustomization files and patches are left to kubectl -k).
func manifestObjects(t *testing.T, files []string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(m) == 0 {
				continue
			}
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

func TestDeployManifestsApplyToTheRealAPIServerWithServerSideDryRun(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	files := []string{filepath.Join(c.Repo, "deploy", "wgmesh.yaml")}
	base, _ := filepath.Glob(filepath.Join(c.Repo, "deploy", "base", "*.yaml"))
	for _, f := range base {
		if filepath.Base(f) != "kustomization.yaml" {
			files = append(files, f)
		}
	}
	objs := manifestObjects(t, files)
	if len(objs) == 0 {
		t.Fatal("no objects in deploy/")
	}
	dyn, err := dynamic.NewForConfig(c.RestConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Client.Discovery()))
	kinds := map[string]int{}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s %s: %v", gvk, o.GetName(), err)
			continue
		}
		body, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		force := true
		_, err = dyn.Resource(m.Resource).Namespace(o.GetNamespace()).Patch(ctx, o.GetName(), types.ApplyPatchType, body,
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: "wgmesh-e2e", Force: &force, FieldValidation: "Strict"})
		if err != nil {
			t.Errorf("server-side dry-run apply of %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
			continue
		}
		kinds[gvk.Kind]++
	}
	t.Logf("server-side dry-run applied (strict field validation) from %d files: %v", len(files), kinds)

	// The kustomize overlays, through kubectl's own kustomize, as a user applies them.
	kubectl := filepath.Join(c.K8sBin, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl not built (make k8s-bin): %v", err)
	}
	overlays, _ := filepath.Glob(filepath.Join(c.Repo, "deploy", "overlays", "*"))
	for _, dir := range overlays {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", c.ControlPlaneNetNS(), kubectl,
			"--kubeconfig", c.AdminKubeconfig(), "apply", "--server-side", "--dry-run=server", "--validate=strict", "-k", dir).CombinedOutput()
		t.Logf("kubectl apply --server-side --dry-run=server -k %s:\n%s", strings.TrimPrefix(dir, c.Repo+"/"), out)
		if err != nil {
			t.Errorf("overlay %s: %v", dir, err)
		}
	}
}
