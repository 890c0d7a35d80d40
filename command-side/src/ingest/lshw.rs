//! Hardware observations from the output of `lshw -json`.
