// Command stages prints the kwok Stages the local control plane runs with: the ones kwok
// ships as its defaults (nodes become Ready at once and keep their Lease renewed; pods
// become Running and Ready at once, complete when they have finished, and go away when
// deleted). They come from the kwok module of the version built, so they always match it.
package main

import (
	"fmt"
	"strings"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodelease "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

func main() {
	stages := []string{
		nodefast.DefaultNodeInit,
		nodelease.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady,
		podfast.DefaultPodComplete,
		podfast.DefaultPodDelete,
	}
	for i, stage := range stages {
		if i > 0 {
			fmt.Println("---")
		}
		fmt.Print(strings.TrimRight(stage, "\n") + "\n")
	}
}
