//! End-to-end tests: a real `qmd` on a temporary device, driven by `qmadmin` scripts.

mod support;

// The universal device list: crdl, lidl, dsdl, livtoc, chdl, other files.
mod device;
// Tuxedo-style scripts: here-documents with prompt answers, positional one-liners, pipes.
mod scripts;
