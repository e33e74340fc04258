//! Page tests through the real router in-process (see pages.rs).

mod pages;
