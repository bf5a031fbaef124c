-- A run's tenant and smith are the ones its request was authenticated as (the accept statement takes
-- them from the smith row auth just read, or from the conversation, which keeps these constraints), and
-- tenants and smiths are never deleted. These two foreign keys therefore never refused a row; what they
-- did was make every accepted turn lock its tenant's and its smith's row (FOR KEY SHARE): with many
-- turns of one smith in flight that is a new multixact and a WAL-logged tuple lock on two hot rows per
-- turn (0.68 multixacts per turn in `npm run bench -- throughput`, 0.03 without these keys).
ALTER TABLE runs DROP CONSTRAINT runs_tenant_id_fkey, DROP CONSTRAINT runs_smith_id_fkey;
