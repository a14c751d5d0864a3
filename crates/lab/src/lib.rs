//! Builds fault scenarios in network namespaces from data files and runs conndoc against them.
