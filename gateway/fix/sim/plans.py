"""What the broker simulator is told to do: how it fills (FillPlan) and how it plays the
post-trade lifecycle (PostTradePlan).

Both are frozen: a run has one of each, and `BrokerSimulator.set_post_trade(key, plan)`
gives one order (ClOrdID) or one J (AllocID) a plan of its own, usually made with
`dataclasses.replace(run_plan, ...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.fix.allocation_codec import JReceived


@dataclass(frozen=True)
class FillPlan:
    fills: int = 10
    interval_ms: int = 100
    lot: int = 100
    prices: tuple[Decimal, ...] = ()
    """Prices cycled over the fills; empty means a small walk around the limit price."""
    first_fill_delay_ms: int = 50
    done_for_day_at: Decimal | None = None
    """Stop filling at this fraction of the order and send DoneForDay (150=3)."""


MISMATCH_FIELDS = ("net_money", "commission", "avg_px", "qty", "settl_date")
"""The one field a `mismatch` account's first AK gets wrong."""

STATUS_CONFIRM_CODES = ("2", "3")
"""ConfirmStatus(665) of a status confirm (773=1): 2 mismatched account, 3 missing SSI."""

CORRECT_NOW = "au_reject"
"""`status_confirm_fix`: replace a status confirm once the gateway's AU rejects it."""


def _frozen(mapping: Mapping[object, object]) -> Mapping[object, object]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class PostTradePlan:
    """How the broker answers Js and confirms allocations. The default is an ordinary broker:
    P received then accepted for every valid J, then one correct AK per line.
    """

    # -- P (AllocationInstructionAck) --------------------------------------------------------
    reject_block: Mapping[int, str] = field(default_factory=dict)
    """Nth J of an order (1 = the first, counting New, Replace and Cancel) -> AllocRejCode(88):
    answered 87=1 with that code."""
    reject_block_if: Callable[[JReceived], str | None] | None = None
    """Called with every J (a fragmented one once complete): an AllocRejCode rejects it."""
    reject_account: Mapping[str, str] = field(default_factory=dict)
    """AllocAccount -> IndividualAllocRejCode(776): a J with such a line is answered 87=2
    listing those lines (AllocAccount, IndividualAllocID, 776, AllocText)."""
    reject_replace_after_accept: bool = False
    """A Replace (71=1) of a J already accepted is refused (87=1, 88=7): manual amendment."""
    reject_cancel_after_accept: bool = False
    """Same for a Cancel (71=2)."""
    withhold_final_p: bool = False
    """Answer 87=3 and nothing more (a broker whose booking never completes)."""
    check_avg_px: bool = False
    """Refuse (88=2) a J whose AvgPx differs from the broker's own by more than 0.0001."""

    # -- AK (Confirmation) -------------------------------------------------------------------
    acks: bool = True
    """Send an AK per line once the J is accepted (False: P only, as before AKs existed)."""
    ak_delay_ms: int = 0
    """Time between two AKs (the busts and corrections planned after the J follow the last
    AK by as much)."""
    commission_per_share: Decimal | None = None
    """Commission on every AK (CommType 3, absolute, to the cent); net money = gross +
    commission on a buy, gross - commission on a sell. None: no commission, net = gross."""
    missing_ak: frozenset[str] = frozenset()
    """Accounts whose AK is held until a BH asks for it; that AK echoes ConfirmReqID(859)."""
    mismatch: Mapping[str, str] = field(default_factory=dict)
    """Account -> the field its first AK gets wrong (one of MISMATCH_FIELDS)."""
    correct_mismatch_on_reject: bool = True
    """An AU 940=2 of a mismatched AK is answered with a correct AK 666=1 (ConfirmRefID)."""
    status_confirm: Mapping[str, str] = field(default_factory=dict)
    """Account -> ConfirmStatus 2 (mismatched account) or 3 (missing SSI): its first AK is a
    status confirm (773=1); a correct AK 666=1 replaces it later (status_confirm_fix)."""
    status_confirm_fix: str = CORRECT_NOW
    """When the status confirm is replaced by a correct AK: "au_reject" (after the gateway's
    AU 940=2, or a BH), "timer" (status_confirm_fix_ms after it), "manual" (only
    `broker.reissue_confirmation(...)` or a BH)."""
    status_confirm_fix_ms: int = 500

    # -- AS (AllocationReport) ---------------------------------------------------------------
    send_as: bool = False
    """After accepting a J, send an AS (794=4, sell-side calculated) before the AKs."""
    as_move: tuple[str, str, Decimal] | None = None
    """(from account, to account, qty): the AS books that much of one account on another
    (an out-of-band amendment); the AKs then follow the AS."""

    # -- Busts and corrections after the J ---------------------------------------------------
    bust_after_j: tuple[int, ...] = ()
    """Fill indexes (0 = the order's first fill) busted (150=H) once the J is accepted."""
    correct_after_j: tuple[tuple[int, Decimal], ...] = ()
    """(fill index, new LastPx) corrected (150=G) once the J is accepted; the same index
    twice corrects the correction (ExecRefID = the latest ExecID of that fill)."""
    fix42_corrections: bool = False
    """Busts and corrections also carry ExecTransType(20) 1 cancel / 2 correct (FIX 4.2)."""
    fix42_only: bool = False
    """The FIX 4.2 form only: ExecTransType(20) with ExecType(150) 1/2 as the 4.2 dictionary
    allows (the fill's own type), no 150=H/G. A 4.4 reader refuses it."""

    def __post_init__(self) -> None:
        for name in ("reject_block", "reject_account", "mismatch", "status_confirm"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "missing_ak", frozenset(self.missing_ak))
        object.__setattr__(self, "bust_after_j", tuple(self.bust_after_j))
        object.__setattr__(self, "correct_after_j",
                           tuple((int(i), Decimal(px)) for i, px in self.correct_after_j))
        bad = {f for f in self.mismatch.values() if f not in MISMATCH_FIELDS}
        if bad:
            raise ValueError(f"mismatch field(s) {sorted(bad)}: expected one of {MISMATCH_FIELDS}")
        bad = {c for c in self.status_confirm.values() if c not in STATUS_CONFIRM_CODES}
        if bad:
            raise ValueError(f"status_confirm code(s) {sorted(bad)}: expected 2 or 3")
        if self.status_confirm_fix not in (CORRECT_NOW, "timer", "manual"):
            raise ValueError("status_confirm_fix: expected au_reject, timer or manual")
        if any(n < 1 for n in self.reject_block):
            raise ValueError("reject_block: J numbers start at 1")
        if self.ak_delay_ms < 0:
            raise ValueError("ak_delay_ms must not be negative")
