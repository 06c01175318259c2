"""The fault lab: topologies of real services captured by the real eBPF agent, fault mechanisms, and the case recorder."""
