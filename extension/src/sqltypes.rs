//! `cidr[]` as a function argument. The value is only ever handed back to SPI (and checked
//! there), so the raw datum is kept as is instead of being converted to and from text.

use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{FromDatum, IntoDatum};

/// A non-NULL `cidr[]` argument, valid for the duration of the function call.
#[derive(Clone, Copy)]
pub struct CidrArray(pg_sys::Datum);

impl FromDatum for CidrArray {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(CidrArray(datum))
    }
}

impl IntoDatum for CidrArray {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::CIDRARRAYOID
    }
}

unsafe impl SqlTranslatable for CidrArray {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(CidrArray);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("cidr[]"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("cidr[]")));
}

// SAFETY: the datum is stored as is; every reader (SPI) interprets it as `cidr[]`, the type
// the SQL signature declares.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for CidrArray {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // SAFETY: pgrx calls this only for non-NULL arguments of the declared type.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("cidr[] argument unexpectedly NULL"))
    }
}
