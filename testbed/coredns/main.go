// CoreDNS for the kfn test bed, compiled with only the plugins the cluster
// DNS needs (the upstream binary links every cloud DNS SDK and takes far
// longer to build on two cores). No forward plugin: cluster DNS answers
// cluster names only and never talks to an outside resolver.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// The order is upstream's plugin.cfg order, restricted to the plugins above.
var directives = []string{
	"reload", "ready", "health", "errors", "log", "loadbalance", "cache", "template", "kubernetes", "loop",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
