//! Many end users behind one GigaChat key: what keeps them apart beyond
//! telling them apart (which `access` does).

pub(crate) mod ownership;
pub(crate) mod policy;
