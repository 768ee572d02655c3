//! Returning the single row of a set-returning C function.

use pgrx::pg_sys;

/// Hands back `values` / `nulls` as the one row of the set, in materialize mode: the function
/// is called once per execution, and the row descriptor is the one the executor already built
/// for the call (`expectedDesc`), not one rebuilt from the catalog. A declaration with fewer
/// columns (an older release's, in a database not yet updated) gets the leading ones.
///
/// # Safety
/// `fcinfo` must be the current call of a function declared to return a set of rows whose
/// columns are a prefix of `values`, of the types the datums have.
pub unsafe fn return_one_row(
    fcinfo: pg_sys::FunctionCallInfo,
    values: &mut [pg_sys::Datum],
    nulls: &mut [bool],
) -> pg_sys::Datum {
    // SAFETY: per the contract. InitMaterializedSRF raises a clean ERROR where no set is
    // accepted; it reads expectedDesc only when asked to, and only if the caller gave one.
    unsafe {
        let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
        let has_expected = !rsinfo.is_null()
            && (*rsinfo).type_ == pg_sys::NodeTag::T_ReturnSetInfo
            && !(*rsinfo).expectedDesc.is_null()
            && usize::try_from((*(*rsinfo).expectedDesc).natts).is_ok_and(|n| n <= values.len());
        let flags = if has_expected {
            pg_sys::MAT_SRF_USE_EXPECTED_DESC
        } else {
            0
        };
        crate::compat::init_materialized_srf(fcinfo, flags);
        if !usize::try_from((*(*rsinfo).setDesc).natts).is_ok_and(|n| n <= values.len()) {
            pgrx::error!("apikey: result row does not match the declared result columns");
        }
        pg_sys::tuplestore_putvalues(
            (*rsinfo).setResult,
            (*rsinfo).setDesc,
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
        );
        pg_sys::Datum::from(0)
    }
}
