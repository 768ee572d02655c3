//! Network types kept as raw datums: `cidr[]` arguments of `apikey_issue` (only handed back
//! to SPI, which checks them), the `inet` argument of `apikey_verify`, and `cidr[]` column
//! values read for allow-list checks. Nothing is converted to and from text.

use crate::net::NetAddr;
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

/// A non-NULL `inet` value, valid for the duration of the function call: read as a
/// [`NetAddr`] for allow-list checks and handed to SPI unchanged for audit rows.
#[derive(Clone, Copy)]
pub struct InetDatum(pg_sys::Datum);

impl InetDatum {
    /// # Safety
    /// `datum` must be a non-NULL `inet` datum that outlives the returned value.
    pub unsafe fn new(datum: pg_sys::Datum) -> Self {
        InetDatum(datum)
    }

    pub fn addr(&self) -> Option<NetAddr> {
        // SAFETY: `new`'s contract: an inet varlena, possibly toasted or short-headed.
        unsafe { varlena_payload(self.0, NetAddr::from_bytes) }
    }

    /// A copy that outlives the call, e.g. to name the client in later audit rows of the
    /// same transaction.
    pub fn owned(self) -> OwnedInet {
        // SAFETY: as in `addr`.
        OwnedInet(unsafe { varlena_payload(self.0, <[u8]>::to_vec) })
    }
}

/// An `inet` value's bytes (family, mask bits, address), kept in Rust memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedInet(Vec<u8>);

impl IntoDatum for OwnedInet {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let size = pg_sys::VARHDRSZ + self.0.len();
        // SAFETY: a fresh allocation of `size` bytes in the current memory context, its
        // header set and the payload copied in, is a valid inet varlena.
        unsafe {
            let value = pg_sys::palloc(size).cast::<pg_sys::varlena>();
            pgrx::varlena::set_varsize_4b(value, i32::try_from(size).ok()?);
            std::ptr::copy_nonoverlapping(
                self.0.as_ptr(),
                pgrx::varlena::vardata_4b(value).cast::<u8>().cast_mut(),
                self.0.len(),
            );
            Some(pg_sys::Datum::from(value))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::INETOID
    }
}

impl IntoDatum for InetDatum {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::INETOID
    }
}

/// Runs `read` on the bytes of the varlena `datum` after its header.
///
/// # Safety
/// `datum` must point to a valid varlena.
unsafe fn varlena_payload<R>(datum: pg_sys::Datum, read: impl FnOnce(&[u8]) -> R) -> R {
    // SAFETY: per the contract; detoasting copies into the current memory context.
    unsafe {
        let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let data = pgrx::varlena::vardata_any(v).cast::<u8>();
        read(std::slice::from_raw_parts(
            data,
            pgrx::varlena::varsize_any_exhdr(v),
        ))
    }
}

/// Reads every element of the one-dimensional array `datum`, whose elements are varlenas of
/// type `element_type` (int-aligned, like text, inet and cidr); `None` for a NULL element or
/// one `read` refuses.
///
/// # Safety
/// `datum` must be a non-NULL array of `element_type`.
unsafe fn varlena_elements<R>(
    datum: pg_sys::Datum,
    element_type: pg_sys::Oid,
    mut read: impl FnMut(&[u8]) -> Option<R>,
) -> Vec<Option<R>> {
    // SAFETY: per the contract; deconstruct_array returns `count` element datums that point
    // into the detoasted array.
    unsafe {
        let array = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
        if (*array).ndim == 0 {
            return Vec::new();
        }
        let mut elements = std::ptr::null_mut();
        let mut nulls = std::ptr::null_mut();
        let mut count = 0;
        pg_sys::deconstruct_array(
            array,
            element_type,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
            &mut elements,
            &mut nulls,
            &mut count,
        );
        let count = usize::try_from(count).unwrap_or(0);
        (0..count)
            .map(|i| {
                if *nulls.add(i) {
                    None
                } else {
                    varlena_payload(*elements.add(i), &mut read)
                }
            })
            .collect()
    }
}

/// A non-NULL `text` argument as a string, borrowed where it is UTF-8. Bytes that are not
/// (only possible outside UTF-8 databases, e.g. `SQL_ASCII`) are replaced, as in
/// [`text_array`], so such a token is malformed instead of an error.
///
/// # Safety
/// `datum` must be a non-NULL `text` datum that outlives `'a` (an argument of the call).
pub unsafe fn text<'a>(datum: pg_sys::Datum) -> std::borrow::Cow<'a, str> {
    // SAFETY: per the contract; detoasting copies into the call's memory context, which
    // outlives the call's use of the string.
    unsafe {
        let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let bytes = std::slice::from_raw_parts::<'a, u8>(
            pgrx::varlena::vardata_any(v).cast::<u8>(),
            pgrx::varlena::varsize_any_exhdr(v),
        );
        String::from_utf8_lossy(bytes)
    }
}

/// The strings of a `text[]` argument, `None` for a NULL element. Bytes that are not UTF-8
/// (only possible outside UTF-8 databases) are replaced, so such a string is no valid scope.
///
/// # Safety
/// `datum` must be a non-NULL `text[]` datum.
pub unsafe fn text_array(datum: pg_sys::Datum) -> Vec<Option<String>> {
    // SAFETY: per the contract.
    unsafe {
        varlena_elements(datum, pg_sys::TEXTOID, |bytes| {
            Some(String::from_utf8_lossy(bytes).into_owned())
        })
    }
}

/// A non-NULL `cidr[]` column value, read as its networks.
pub struct CidrList(Vec<NetAddr>);

impl CidrList {
    /// `ip <<= ANY (list)`.
    pub fn admits(&self, ip: &NetAddr) -> bool {
        self.0.iter().any(|network| ip.is_within(network))
    }
}

impl FromDatum for CidrList {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: only read from columns declared cidr[].
        (!is_null).then(|| {
            // A NULL element (only a DBA's UPDATE can store one) admits nothing.
            CidrList(unsafe {
                varlena_elements(datum, pg_sys::CIDROID, NetAddr::from_bytes)
                    .into_iter()
                    .flatten()
                    .collect()
            })
        })
    }
}

/// A non-NULL `text[]` value read with [`text_array`], without pgrx's generic array
/// machinery (which looks the element type up in the catalog on every call).
pub struct TextList(pub Vec<String>);

impl FromDatum for TextList {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: only read from columns declared text[].
        // A NULL element (only a DBA's UPDATE can store one) grants nothing.
        (!is_null).then(|| TextList(unsafe { text_array(datum).into_iter().flatten().collect() }))
    }
}

/// `items` as a one-dimensional `text[]` datum in the current memory context, built
/// directly rather than through pgrx's generic array conversion.
pub fn text_array_datum(items: &[String]) -> pg_sys::Datum {
    let mut elements: Vec<pg_sys::Datum> = items
        .iter()
        .map(|item| {
            // SAFETY: copies `item` into a new text value; lengths of scopes are bounded far
            // below i32::MAX by validation on issue.
            pg_sys::Datum::from(unsafe {
                pg_sys::cstring_to_text_with_len(item.as_ptr().cast(), item.len() as i32)
            })
        })
        .collect();
    // SAFETY: `elements` holds `len` text datums; construct_array copies them.
    let array = unsafe {
        pg_sys::construct_array(
            elements.as_mut_ptr(),
            elements.len() as i32,
            pg_sys::TEXTOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
        )
    };
    pg_sys::Datum::from(array)
}
