"""Running sched_ext policies: everything between a policy folder and the kernel.

* `sched_ext`: the kernel's sched_ext state and a scheduler's exit info.
* `policy`: policy manifests (policies/NAME/manifest.toml) and their discovery.
* `deployment`: one policy attached by this process: load, attach, watch, detach.
* `status`: the live status record `aios-lab status` reads.
* `kinds`: model kinds (the manifest's [model] kind) as registered types behind
  one protocol: the mllb decision tree, the frequency table.
* `deploy_loop`: the kind-agnostic foreground loop behind `aios-lab deploy`.
* `signals`: SIGINT/SIGTERM/SIGHUP as an orderly stop, shared by deploy,
  collect and the cpufreq governor loop.
"""
