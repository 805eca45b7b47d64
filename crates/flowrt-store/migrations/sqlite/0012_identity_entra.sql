-- A session identity may carry a Microsoft Entra ID service principal (keyless Azure endpoints);
-- its secret is sealed like the feed token.
ALTER TABLE identities ADD COLUMN entra_tenant_id TEXT;
ALTER TABLE identities ADD COLUMN entra_client_id TEXT;
ALTER TABLE identities ADD COLUMN entra_secret_sealed TEXT;
