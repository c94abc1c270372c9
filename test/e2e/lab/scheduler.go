package lab

// startScheduler starts kube-scheduler in the control-plane namespace
// (Config.Kubelets): pods created without a node name, as Kubernetes' own
// e2e suite creates them, are bound by it.
func (l *Lab) startScheduler() error {
	bin, err := l.k8sBin("kube-scheduler")
	if err != nil {
		return err
	}
	if _, err := l.startProcess("kube-scheduler", l.cpDir("kube-scheduler.log"), nil,
		"ip", "netns", "exec", l.ControlPlaneNetNS(), bin,
		"--kubeconfig", l.AdminKubeconfig(), "--leader-elect=false",
		"--bind-address", "127.0.0.1"); err != nil {
		return err
	}
	l.Log.Info("lab: kube-scheduler up", "netns", l.ControlPlaneNetNS())
	return nil
}
