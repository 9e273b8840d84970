// Redis scripts shared by the health pieces that hold a key as a lease.

/** Deletes KEYS[1] only while it still holds ARGV[1] (this holder's token); 1 when deleted. */
export const RELEASE_IF_HELD = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;
