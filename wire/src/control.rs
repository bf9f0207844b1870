//! What every control message implements: its kind, and the limits on its variable-length
//! fields, checked on the archive before anything is allocated and before encoding.

use rkyv::Archive;

use crate::error::{EncodeError, Malformed};
use crate::frame::MessageKind;

/// A message carried as an rkyv archive, with the limits on its variable-length fields.
pub(crate) trait ControlMessage: Archive + Sized {
    const KIND: MessageKind;

    /// Checks the validated archive's lengths before anything is allocated for them.
    fn check_archived(archived: &Self::Archived) -> Result<(), Malformed>;

    /// Checks the same limits before encoding, so we never send what a peer must refuse.
    fn check_encodable(&self) -> Result<(), EncodeError>;
}

pub(crate) fn field_limit(field: &'static str, len: usize, max: usize) -> Result<(), Malformed> {
    if len > max {
        return Err(Malformed::FieldTooLarge { field, len, max });
    }
    Ok(())
}

pub(crate) fn encodable_limit(
    field: &'static str,
    len: usize,
    max: usize,
) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::FieldTooLarge { field, len, max });
    }
    Ok(())
}
