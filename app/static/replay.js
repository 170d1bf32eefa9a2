// After the replay button has set the seed of the replies shown: press Generate, as a user would.
() => { document.querySelector("#generate")?.click(); }
