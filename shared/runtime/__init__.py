"""The daemon runtime, the top layer of `shared`: configuration loading (`config`), the daemon
base class and its contract (`daemon`), signals and the stop budget (`lifecycle`), systemd
notifications (`systemd`), periodic jobs under advisory locks (`periodic`), the metrics registry
(`metrics`) and the HTTP sites with their limits (`http`). It may import every other layer.
"""
