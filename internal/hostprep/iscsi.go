package hostprep

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/wgmesh/wgmesh/internal/hostprep/iqn"
)

// InitiatorNamePath is the file iscsid reads its initiator name from.
const InitiatorNamePath = "/etc/iscsi/initiatorname.iscsi"

// checkInitiatorName: iscsid refuses to start without a valid name, and
// Longhorn then only sees its CSI sidecar time out (DeadlineExceeded).
func (r *run) checkInitiatorName() Check {
	c := Check{ID: "iscsi.initiator-name", Topic: "InitiatorName", Required: true}
	p, fi, err := r.root.Lstat(InitiatorNamePath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Evidence = []string{InitiatorNamePath + " does not exist (iscsid: \"InitiatorName file " + InitiatorNamePath + " does not exist or does not contain a properly formatted InitiatorName\")"}
		return r.writeInitiatorName(c, "is missing")
	case err != nil:
		c.Status = StatusMissing
		c.Summary = "cannot read " + InitiatorNamePath
		c.Evidence = []string{err.Error()}
		return c
	}
	name, problem := r.readInitiatorName()
	if fi.Mode()&fs.ModeSymlink != 0 {
		// Someone else owns it (NixOS: services.openiscsi.name makes it a
		// link into the Nix store). Never write through a symlink.
		res, _ := r.root.Resolve(InitiatorNamePath)
		chain := []string{p}
		for _, l := range res.Links {
			chain = append(chain, l.Target)
		}
		c.Evidence = append(c.Evidence, "symlink: "+strings.Join(chain, " -> "))
		store := strings.HasPrefix(res.Path, "/nix/store/")
		if problem == "" {
			c.Status = StatusOK
			c.Summary = fmt.Sprintf("InitiatorName=%s (%s)", name, ownerOf(store, res.Path))
			return c
		}
		c.Status = StatusMissing
		c.Evidence = append(c.Evidence, problem)
		c.Summary = fmt.Sprintf("initiator name %s; not rewritten: the file is a symlink (%s)", shortProblem(problem), ownerOf(store, res.Path))
		fresh, _ := iqn.Generate(r.opts.Random)
		if store || r.distro.Family == FamilyNixOS {
			c.Fix = fmt.Sprintf(`in configuration.nix: services.openiscsi.name = "%s"; then nixos-rebuild switch`, fresh)
		} else {
			c.Fix = fmt.Sprintf("write InitiatorName=%s into %s (the link's target), then: systemctl restart iscsid", fresh, res.Path)
		}
		return c
	}
	if !fi.Mode().IsRegular() {
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("%s is a %s, not a file; not replaced", InitiatorNamePath, fi.Mode().Type())
		c.Fix = "remove it, then run wgmesh-hostprep check --fix"
		return c
	}
	if problem == "" {
		c.Status = StatusOK
		c.Summary = "InitiatorName=" + name
		return c
	}
	c.Evidence = append(c.Evidence, problem)
	return r.writeInitiatorName(c, shortProblem(problem))
}

func ownerOf(store bool, target string) string {
	if store {
		return "owned by the NixOS configuration: services.openiscsi.name, " + target
	}
	return "link to " + target
}

func shortProblem(problem string) string {
	if strings.HasPrefix(problem, "no InitiatorName") {
		return "is missing from the file"
	}
	return "is malformed"
}

// readInitiatorName returns the name and "" if it is valid, else a
// description of the problem for evidence.
func (r *run) readInitiatorName() (string, string) {
	b, err := r.root.ReadFile(InitiatorNamePath)
	if err != nil {
		return "", err.Error()
	}
	name, err := iqn.ParseFile(bytes.NewReader(b))
	if errors.Is(err, iqn.ErrNoInitiatorName) {
		return "", "no InitiatorName= line in " + InitiatorNamePath
	}
	if err != nil {
		return "", err.Error()
	}
	if err := iqn.Validate(name); err != nil {
		return name, err.Error()
	}
	return name, ""
}

// writeInitiatorName writes a fresh iscsi-iname style name (mode 0600),
// keeping a copy of a malformed file it replaces for undo.
func (r *run) writeInitiatorName(c Check, what string) Check {
	fresh, err := iqn.Generate(r.opts.Random)
	if err != nil {
		c.Status = StatusMissing
		c.Summary = "initiator name " + what
		c.Evidence = append(c.Evidence, err.Error())
		return c
	}
	restart := "systemctl restart iscsid"
	if r.distro.Family == FamilyNixOS {
		restart = "systemctl restart iscsid (and make it permanent: services.openiscsi.name = \"" + fresh + "\";)"
	}
	if r.fixing(c.ID) {
		p, err := r.fix.writeFile(InitiatorNamePath, iqn.FileContents(fresh), 0o600)
		if err == nil {
			c.Status = StatusFixed
			c.Summary = fmt.Sprintf("initiator name %s; wrote InitiatorName=%s", what, fresh)
			c.Changed = []string{fmt.Sprintf("wrote %s (mode 0600): InitiatorName=%s", p, fresh)}
			if len(r.processes("iscsid")) > 0 {
				c.Fix = "iscsid read the old name at start: " + restart
			}
			return c
		}
		c.Evidence = append(c.Evidence, err.Error())
	}
	c.Status = StatusMissing
	c.Summary = "initiator name " + what
	if r.distro.Family == FamilyNixOS {
		c.Fix = fmt.Sprintf(`in configuration.nix: services.openiscsi = { enable = true; name = "%s"; }; then nixos-rebuild switch`, fresh)
	} else {
		c.Fix = fmt.Sprintf("echo InitiatorName=$(iscsi-iname) > %s && chmod 0600 %s   (what --fix does)\nthen: %s", InitiatorNamePath, InitiatorNamePath, restart)
	}
	return c
}

// checkIscsid: iscsiadm talks to iscsid; without it every attach fails.
func (r *run) checkIscsid() Check {
	c := Check{ID: "iscsi.iscsid", Topic: "IscsidService", Required: true}
	if procs := r.processes("iscsid"); len(procs) > 0 {
		c.Status = StatusOK
		c.Summary = "iscsid is running (" + strings.TrimPrefix(procs[0], "process iscsid: ") + ")"
		return c
	}
	if units := r.activeUnits("iscsid.service"); len(units) > 0 {
		c.Status = StatusOK
		c.Summary = "iscsid.service is active"
		c.Evidence = units
		return c
	}
	units := r.activeUnits("iscsid.socket")
	if ok, ev := r.listeningAbstract("ISCSIADM_ABSTRACT_NAMESPACE"); ok || len(units) > 0 {
		c.Status = StatusOK
		c.Summary = "iscsid is socket-activated (iscsid.socket listens on @ISCSIADM_ABSTRACT_NAMESPACE)"
		if ev != "" {
			units = append(units, ev)
		}
		c.Evidence = units
		return c
	}
	c.Status = StatusMissing
	c.Summary = "iscsid is not running and iscsid.socket is not listening"
	c.Evidence = []string{"no process named iscsid in /proc, no /run/systemd/units/invocation:iscsid.{service,socket}, no @ISCSIADM_ABSTRACT_NAMESPACE in /proc/1/net/unix"}
	switch r.distro.Family {
	case FamilyNixOS:
		c.Fix = `in configuration.nix: services.openiscsi = { enable = true; name = "<a valid iqn>"; }; then nixos-rebuild switch`
	case FamilyUnknown:
		c.Fix = "install open-iscsi, then: systemctl enable --now iscsid"
	default:
		c.Fix = r.distro.installFix(pkgOpenISCSI) + " && systemctl enable --now iscsid"
	}
	return c
}
