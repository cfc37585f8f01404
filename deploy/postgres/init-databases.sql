-- One database per deployable: a service never reads another service's database.
-- The postgres image runs this once, as POSTGRES_USER, on an empty data directory
-- (/docker-entrypoint-initdb.d). On an external server, run it as the platform's
-- database owner: psql "postgresql://ght@db.example.org/postgres" -f init-databases.sql
CREATE DATABASE contracts;
CREATE DATABASE activity;
CREATE DATABASE beds;
CREATE DATABASE staffing;
CREATE DATABASE gateway;
