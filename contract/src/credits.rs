//! Credit balances as arithmetic: what a balance holds given its table row and the spending
//! the server has counted in memory, and when a refill is due. No I/O, so every rule is
//! unit-tested here.
//!
//! A balance is a row (`remaining`, and `spent_mark`: how much of the server's running spend
//! counter the row already includes) plus that running counter (`spent`, in shared memory,
//! only ever changed under a lock). The balance now is `remaining - (spent - spent_mark)`.
//! The background worker moves spending into the row by setting `remaining` to exactly that
//! value and `spent_mark` to the counter it read, in one UPDATE, so the balance is the same
//! before and after the write, in any session, whichever version of the row it holds: a
//! spend is never lost by a retried or aborted write, and never applied twice. A mark is only
//! meaningful for the shared memory that made it (`epoch`); after a restart the counter starts
//! again and a row marked by an earlier epoch counts as marked at zero.

/// What a verification reads of a balance's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub remaining: i64,
    pub spent_mark: i64,
    pub mark_epoch: i64,
    /// Set back to this at each refill; `None` without a schedule.
    pub refill_amount: Option<i64>,
    /// When the next refill is due (µs since the PostgreSQL epoch), with a schedule.
    pub next_refill_at: Option<i64>,
}

/// What the server counts of one balance, in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spending {
    /// Running total of credits spent (less those given back) since this memory was made.
    pub spent: i64,
    /// The refill this server first saw due (its `next_refill_at`), and `spent` at that
    /// moment: from then on the balance is the refill amount less what was spent since, until
    /// the row itself is refilled.
    pub refill_due: i64,
    pub spent_at_refill: i64,
}

impl Row {
    /// The row's mark as this epoch's counter reads it.
    fn mark(&self, epoch: i64) -> i64 {
        if self.mark_epoch == epoch {
            self.spent_mark
        } else {
            0
        }
    }

    /// The refill due at `now` that the row does not hold yet: its amount and due time.
    pub fn refill_pending(&self, now: i64) -> Option<(i64, i64)> {
        match (self.refill_amount, self.next_refill_at) {
            (Some(amount), Some(due)) if now >= due => Some((amount, due)),
            _ => None,
        }
    }
}

/// The balance at `now`. Notes in `spending` a refill first seen due (so everyone computes
/// the refilled balance from the same point).
pub fn balance(row: &Row, spending: &mut Spending, epoch: i64, now: i64) -> i64 {
    match row.refill_pending(now) {
        Some((amount, due)) => {
            if spending.refill_due != due {
                spending.refill_due = due;
                spending.spent_at_refill = spending.spent;
            }
            amount.saturating_sub(spending.spent.saturating_sub(spending.spent_at_refill))
        }
        None => row
            .remaining
            .saturating_sub(spending.spent.saturating_sub(row.mark(epoch))),
    }
}

/// Spends `cost` if the balance holds it: the balance after, or `Err(balance)` when short
/// (nothing spent). A cost of 0 spends nothing and is short only below zero.
pub fn spend(
    row: &Row,
    spending: &mut Spending,
    epoch: i64,
    now: i64,
    cost: i64,
) -> Result<i64, i64> {
    let balance = balance(row, spending, epoch, now);
    if balance < cost {
        return Err(balance);
    }
    spending.spent = spending.spent.saturating_add(cost);
    Ok(balance - cost)
}

/// Gives back `cost` spent by [`spend`] for a verification refused after all (another of its
/// limits was short). `refill_due` is `spending.refill_due` as that spend left it: a refill
/// first seen since then counted the cost as spent before it, and forgets it there too.
pub fn give_back(spending: &mut Spending, cost: i64, refill_due: i64) {
    spending.spent = spending.spent.saturating_sub(cost);
    if spending.refill_due != refill_due {
        spending.spent_at_refill = spending.spent_at_refill.saturating_sub(cost);
    }
}

/// What the worker writes for a row whose spending it moves into the table: the new
/// `remaining` and `spent_mark`, and whether it applies the refill noted in `spending`.
pub fn settle(row: &Row, spending: &Spending, epoch: i64) -> (i64, i64, bool) {
    let refilled = row.next_refill_at == Some(spending.refill_due);
    let remaining = match (refilled, row.refill_amount) {
        (true, Some(amount)) => {
            amount.saturating_sub(spending.spent.saturating_sub(spending.spent_at_refill))
        }
        _ => row
            .remaining
            .saturating_sub(spending.spent.saturating_sub(row.mark(epoch))),
    };
    (remaining, spending.spent, refilled)
}

/// An interval as PostgreSQL stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

const DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;

impl Interval {
    /// A refill interval must move time forward in every part and by at least a second, so a
    /// schedule can neither stand still nor run backwards.
    pub fn is_valid_refill(&self) -> bool {
        self.months >= 0
            && self.days >= 0
            && self.micros >= 0
            && (self.months > 0 || self.days > 0 || self.micros >= 1_000_000)
    }
}

/// `anchor + n * interval`, in UTC, as PostgreSQL computes `timestamptz + interval` with
/// `TimeZone = UTC`: months on the calendar (the day clamped to the month's length), then
/// days, then the rest. `None` out of range.
pub fn nth_refill(anchor: i64, interval: Interval, n: i64) -> Option<i64> {
    let days_total = anchor.div_euclid(DAY);
    let time_of_day = anchor.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(days_total.checked_add(PG_EPOCH_DAYS)?);
    let months = i64::from(interval.months).checked_mul(n)?;
    let month_index = (year.checked_mul(12)?)
        .checked_add(i64::from(month) - 1)?
        .checked_add(months)?;
    let (year, month) = (
        month_index.div_euclid(12),
        (month_index.rem_euclid(12) + 1) as u32,
    );
    let day = day.min(days_in_month(year, month));
    let days = days_from_civil(year, month, day)
        .checked_sub(PG_EPOCH_DAYS)?
        .checked_add(i64::from(interval.days).checked_mul(n)?)?;
    days.checked_mul(DAY)?
        .checked_add(time_of_day)?
        .checked_add(interval.micros.checked_mul(n)?)
}

/// The first refill after `now` of a schedule started at `anchor`: its number (1 for the
/// first) and time. `None` for an invalid interval or a time out of range.
pub fn next_refill_after(anchor: i64, interval: Interval, now: i64) -> Option<(i64, i64)> {
    if !interval.is_valid_refill() {
        return None;
    }
    // An estimate from the interval's shortest length, then forward one step at a time (at
    // most a few steps, since months differ by at most three days).
    let shortest =
        i64::from(interval.months) * 28 * DAY + i64::from(interval.days) * DAY + interval.micros;
    let mut n = ((now - anchor).max(0) / shortest.max(1)).max(1);
    // The estimate may overshoot by the months' extra days: step back while still after now.
    while n > 1 && nth_refill(anchor, interval, n - 1)? > now {
        n -= 1;
    }
    loop {
        let at = nth_refill(anchor, interval, n)?;
        if at > now {
            return Some((n, at));
        }
        n = n.checked_add(1)?;
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: i64 = 7;

    fn row(remaining: i64, spent_mark: i64) -> Row {
        Row {
            remaining,
            spent_mark,
            mark_epoch: EPOCH,
            refill_amount: None,
            next_refill_at: None,
        }
    }

    #[test]
    fn spending_takes_all_or_nothing_and_never_below_zero() {
        let row = row(3, 0);
        let mut s = Spending::default();
        assert_eq!(spend(&row, &mut s, EPOCH, 0, 2), Ok(1));
        assert_eq!(
            spend(&row, &mut s, EPOCH, 0, 2),
            Err(1),
            "short: nothing taken"
        );
        assert_eq!(s.spent, 2);
        assert_eq!(spend(&row, &mut s, EPOCH, 0, 1), Ok(0));
        assert_eq!(spend(&row, &mut s, EPOCH, 0, 1), Err(0));
        assert_eq!(
            spend(&row, &mut s, EPOCH, 0, 0),
            Ok(0),
            "cost 0 checks at zero"
        );
        let charged = row_after(&row, &s);
        assert_eq!(charged, (0, 3));
        let below = Row {
            remaining: -2,
            ..row
        };
        assert_eq!(
            spend(&below, &mut Spending::default(), EPOCH, 0, 0),
            Err(-2)
        );
    }

    fn row_after(row: &Row, s: &Spending) -> (i64, i64) {
        let (remaining, mark, _) = settle(row, s, EPOCH);
        (remaining, mark)
    }

    #[test]
    fn a_written_row_holds_the_same_balance_old_or_new() {
        let old = row(100, 10);
        let mut s = Spending {
            spent: 40,
            ..Default::default()
        };
        assert_eq!(balance(&old, &mut s, EPOCH, 0), 70);
        let (remaining, spent_mark) = row_after(&old, &s);
        let new = Row {
            remaining,
            spent_mark,
            ..old
        };
        assert_eq!((remaining, spent_mark), (70, 40));
        s.spent += 5;
        assert_eq!(balance(&old, &mut s, EPOCH, 0), 65);
        assert_eq!(balance(&new, &mut s, EPOCH, 0), 65);
        // Written twice (a retried write): nothing doubles.
        let (again, _) = row_after(&new, &s);
        assert_eq!(again, 65);
    }

    #[test]
    fn a_cost_given_back_is_as_if_never_spent_even_across_a_refill() {
        let row = Row {
            refill_amount: Some(10),
            next_refill_at: Some(100),
            ..row(10, 0)
        };
        let mut s = Spending::default();
        assert_eq!(spend(&row, &mut s, 1, 50, 4), Ok(6));
        let due = s.refill_due;
        give_back(&mut s, 4, due);
        assert_eq!(balance(&row, &mut s, 1, 50), 10);

        // Spent before the refill is first seen, given back after it: the refilled balance
        // is the amount less what was spent after it, and nothing of the given-back cost.
        assert_eq!(spend(&row, &mut s, 1, 60, 3), Ok(7));
        let due = s.refill_due;
        assert_eq!(
            spend(&row, &mut s, 1, 100, 2),
            Ok(8),
            "refilled to 10, then 2"
        );
        give_back(&mut s, 3, due);
        assert_eq!(balance(&row, &mut s, 1, 100), 8);
        let (remaining, _, refilled) = settle(&row, &s, 1);
        assert_eq!((remaining, refilled), (8, true));
    }

    #[test]
    fn a_mark_of_another_epoch_counts_as_zero() {
        let row = Row {
            mark_epoch: EPOCH + 1,
            ..row(50, 30)
        };
        let mut s = Spending {
            spent: 4,
            ..Default::default()
        };
        assert_eq!(balance(&row, &mut s, EPOCH, 0), 46);
        assert_eq!(row_after(&row, &s), (46, 4));
    }

    #[test]
    fn a_due_refill_resets_to_the_amount_from_when_it_was_first_seen() {
        let row = Row {
            refill_amount: Some(10),
            next_refill_at: Some(1_000),
            ..row(2, 0)
        };
        let mut s = Spending {
            spent: 5,
            ..Default::default()
        };
        assert_eq!(balance(&row, &mut s, EPOCH, 999), -3);
        assert_eq!(spend(&row, &mut s, EPOCH, 1_000, 4), Ok(6));
        assert_eq!((s.refill_due, s.spent_at_refill), (1_000, 5));
        assert_eq!(spend(&row, &mut s, EPOCH, 1_001, 4), Ok(2));
        let (remaining, mark, refilled) = settle(&row, &s, EPOCH);
        assert_eq!((remaining, mark, refilled), (2, 13, true));
        // The refilled row, read by anyone, holds the same.
        let refilled_row = Row {
            remaining,
            spent_mark: mark,
            next_refill_at: Some(2_000),
            ..row
        };
        assert_eq!(balance(&refilled_row, &mut s, EPOCH, 1_002), 2);
        assert_eq!(balance(&row, &mut s, EPOCH, 1_002), 2);
        // Not due: the refill is not applied by the worker.
        assert!(!settle(&refilled_row, &s, EPOCH).2);
    }

    fn at(year: i64, month: u32, day: u32, hour: i64) -> i64 {
        (days_from_civil(year, month, day) - PG_EPOCH_DAYS) * DAY + hour * 3_600_000_000
    }

    #[test]
    fn dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 10_957, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(PG_EPOCH_DAYS + 59), (2000, 2, 29));
    }

    #[test]
    fn months_are_calendar_months_with_the_day_clamped() {
        let month = Interval {
            months: 1,
            days: 0,
            micros: 0,
        };
        let jan31 = at(2027, 1, 31, 9);
        assert_eq!(nth_refill(jan31, month, 1), Some(at(2027, 2, 28, 9)));
        assert_eq!(nth_refill(jan31, month, 2), Some(at(2027, 3, 31, 9)));
        assert_eq!(
            nth_refill(at(2028, 1, 31, 0), month, 1),
            Some(at(2028, 2, 29, 0))
        );
        assert_eq!(
            nth_refill(at(2026, 12, 15, 0), month, 1),
            Some(at(2027, 1, 15, 0))
        );
        assert_eq!(
            nth_refill(at(2026, 12, 15, 0), month, 13),
            Some(at(2028, 1, 15, 0))
        );
        let mixed = Interval {
            months: 1,
            days: 2,
            micros: 3_600_000_000,
        };
        assert_eq!(nth_refill(jan31, mixed, 1), Some(at(2027, 3, 2, 10)));
        assert_eq!(
            nth_refill(at(1999, 12, 31, 0), month, 2),
            Some(at(2000, 2, 29, 0))
        );
    }

    #[test]
    fn the_next_refill_is_the_first_after_now() {
        let month = Interval {
            months: 1,
            days: 0,
            micros: 0,
        };
        let jan31 = at(2027, 1, 31, 0);
        assert_eq!(
            next_refill_after(jan31, month, jan31),
            Some((1, at(2027, 2, 28, 0)))
        );
        assert_eq!(
            next_refill_after(jan31, month, at(2027, 2, 28, 0)),
            Some((2, at(2027, 3, 31, 0))),
            "a refill due exactly now is past"
        );
        assert_eq!(
            next_refill_after(jan31, month, at(2029, 6, 1, 0)),
            Some((29, at(2029, 6, 30, 0)))
        );
        let seconds = Interval {
            months: 0,
            days: 0,
            micros: 2_000_000,
        };
        assert_eq!(
            next_refill_after(0, seconds, 5_000_000),
            Some((3, 6_000_000))
        );
        assert_eq!(next_refill_after(10, seconds, 0), Some((1, 2_000_010)));
    }

    #[test]
    fn a_refill_interval_moves_forward_by_a_second_at_least() {
        let of = |months, days, micros| Interval {
            months,
            days,
            micros,
        };
        assert!(of(1, 0, 0).is_valid_refill());
        assert!(of(0, 1, 0).is_valid_refill());
        assert!(of(0, 0, 1_000_000).is_valid_refill());
        for bad in [
            of(0, 0, 999_999),
            of(0, 0, 0),
            of(-1, 40, 0),
            of(1, -1, 0),
            of(0, 1, -1),
        ] {
            assert!(!bad.is_valid_refill(), "{bad:?}");
            assert_eq!(next_refill_after(0, bad, 0), None);
        }
        assert_eq!(nth_refill(i64::MAX - 10, of(0, 1, 0), 1), None);
    }
}
