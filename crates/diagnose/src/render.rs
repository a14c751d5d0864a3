//! Text rendering for people: verdict first, then evidence, then the fix.
