//! FB_MODE: which of the firmware's display modes to ask for. No firmware calls here (see
//! firmware::set_framebuffer_mode), so the tests compile and run this on the build machine.

/// A mode the firmware offers (QueryMode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub number: u32,
    pub width: u32,
    pub height: u32,
    /// A linear framebuffer of 32-bit pixels in a format the boot info describes (not
    /// PixelBltOnly, not a PixelBitMask mode of narrower pixels).
    pub linear: bool,
}

/// The largest linear mode no wider and no taller than `want` (width, height): the larger area
/// wins, then the firmware's `current` mode, then the lower mode number. None when none fits.
pub fn choose(modes: impl IntoIterator<Item = Candidate>, current: u32, want: (u32, u32)) -> Option<Candidate> {
    // Mode numbers differ, so no two ranks are equal.
    let rank = |c: &Candidate| (u64::from(c.width) * u64::from(c.height), c.number == current, u32::MAX - c.number);
    modes.into_iter().filter(|c| c.linear && c.width <= want.0 && c.height <= want.1).max_by_key(rank)
}
